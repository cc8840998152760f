"""Pseudonymous output names: a keyed hash of image content, never a file name."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import numpy as np

__all__ = ["pseudonym", "load_site_secret", "SECRET_ENV"]

#: Environment variable that may hold the site secret (hex or any text).
SECRET_ENV = "DEID_SITE_SECRET"
_MIN_SECRET_BYTES = 16


def pseudonym(image: np.ndarray, secret: bytes, *, length: int = 20) -> str:
    """Keyed hash (HMAC-SHA256) of decoded pixels: stable, unlinkable without the secret.

    Hashing pixels rather than file bytes gives the same name to the same photo
    whatever its container or metadata, and no name can be recomputed outside
    the site because the secret never leaves it.

    Examples
    --------
    >>> pseudonym(np.zeros((2, 2, 3), np.uint8), b"0" * 16)
    '88ba4f379e46944d381b'
    """
    if len(secret) < _MIN_SECRET_BYTES:
        raise ValueError(f"site secret must be at least {_MIN_SECRET_BYTES} bytes")
    image = np.ascontiguousarray(image)
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    mac.update(f"{image.dtype.str}{image.shape}".encode())
    mac.update(image.tobytes())
    return mac.hexdigest()[:length]


def load_site_secret(path: str | os.PathLike | None = None, *, create: bool = False) -> bytes:
    """The site secret from ``path``, else ``$DEID_SITE_SECRET``.

    With ``create=True`` a missing file is created with 32 random bytes (hex),
    readable by its owner only.
    """
    if path is None:
        value = os.environ.get(SECRET_ENV)
        if not value:
            raise ValueError(f"no site secret: pass --secret-file or set {SECRET_ENV}")
        secret = value.encode()
    else:
        path = Path(path)
        if not path.exists():
            if not create:
                raise ValueError(f"{path}: site secret file does not exist")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
        secret = path.read_bytes().strip()
    if len(secret) < _MIN_SECRET_BYTES:
        raise ValueError(f"site secret must be at least {_MIN_SECRET_BYTES} bytes")
    return secret
