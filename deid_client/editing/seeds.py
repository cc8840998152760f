"""One seed per image, from the run seed and a stable key of the image.

A result then never depends on processing order, batch composition or how
many images came before: there is no global generator to drift.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["image_key", "image_seed", "image_generator"]


def image_key(image: np.ndarray) -> str:
    """A stable content key of an image (SHA-256 of shape and pixels).

    Used only inside the site to derive seeds; output *names* use the keyed
    :func:`deid_client.io.pseudonyms.pseudonym` instead.
    """
    image = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{image.dtype.str}{image.shape}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def image_seed(run_seed: int, key: str) -> int:
    """A 63-bit seed from the run seed and an image key.

    Examples
    --------
    >>> image_seed(0, "abc") == image_seed(0, "abc") != image_seed(1, "abc")
    True
    """
    digest = hashlib.blake2b(f"{int(run_seed)}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def image_generator(run_seed: int, key: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded for this image (noise is drawn on ``device``)."""
    return torch.Generator(device=device).manual_seed(image_seed(run_seed, key))
