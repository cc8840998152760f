"""Safe image reading, metadata-free atomic writing (images and masks), one resize.

Every photo enters the firewall through :func:`read_image` and every image
leaves it through :func:`write_image`. Reading normalises the zoo of clinical
photo formats to 8-bit sRGB-ish RGB; writing strips *all* metadata and never
leaves a partial file behind.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageReadError",
    "EmptyImageError",
    "NotAnImageError",
    "CorruptImageError",
    "ImageTooLargeError",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_BYTES",
    "IMAGE_SUFFIXES",
    "list_images",
    "read_image",
    "write_image",
    "read_mask",
    "write_mask",
    "encode_image",
    "resize",
    "RESIZE_METHODS",
]

#: Pixel limit against decompression bombs (about a 80-megapixel camera).
DEFAULT_MAX_PIXELS = 80_000_000
#: File-size limit; a clinical photo is a few MB, a RAW-sized JPEG < 100 MB.
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
#: Suffixes a batch considers; anything else in a folder is ignored, not an error.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")

_SRGB = ImageCms.createProfile("sRGB")


class ImageReadError(ValueError):
    """A file could not be read as an image. ``str(err)`` is one readable line."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class EmptyImageError(ImageReadError):
    """The file has no bytes."""


class NotAnImageError(ImageReadError):
    """The file is not in any image format we can decode (or is not a file)."""


class CorruptImageError(ImageReadError):
    """The file claims to be an image but is truncated or damaged."""


class ImageTooLargeError(ImageReadError):
    """The file or its pixel count exceeds the configured limit."""


def list_images(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """Image-like files in ``folder`` (by suffix), sorted; hidden files skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    pattern = "**/*" if recursive else "*"
    return sorted(
        p
        for p in folder.glob(pattern)
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def read_image(
    source: str | os.PathLike | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Read a photo as an 8-bit RGB array, safely.

    EXIF orientation is applied; an embedded ICC profile is converted to sRGB;
    16-bit, alpha (composited on white), palette, grayscale and CMYK images are
    normalised to ``uint8`` H x W x 3. Only the first frame of an animation is
    read.

    Parameters
    ----------
    source : path or bytes
        The file to read, or its encoded bytes.
    max_pixels : int
        Refuse images with more pixels (decompression-bomb guard). The check is
        made from the header, before any pixel is decoded.
    max_bytes : int
        Refuse files larger than this.

    Returns
    -------
    image : ndarray of uint8, shape (H, W, 3)

    Raises
    ------
    ImageReadError
        One of its subclasses, with a one-line message naming the file.

    Examples
    --------
    >>> rgb = read_image("photo.jpg")          # doctest: +SKIP
    >>> rgb.dtype, rgb.shape[2]                # doctest: +SKIP
    (dtype('uint8'), 3)
    """
    path = None if isinstance(source, (bytes, bytearray)) else Path(source)
    data = bytes(source) if path is None else _read_bytes(path, max_bytes)
    if len(data) == 0:
        raise EmptyImageError(path, "file is empty")
    if len(data) > max_bytes:
        raise ImageTooLargeError(path, f"file has {len(data)} bytes, limit is {max_bytes}")
    try:
        with warnings.catch_warnings():
            # Decoder chatter is dropped; Pillow's bomb *warning* becomes an error.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageTooLargeError(
                        path, f"{width}x{height} pixels exceeds the limit of {max_pixels}"
                    )
                if width == 0 or height == 0:
                    raise CorruptImageError(path, "image has zero width or height")
                img.seek(0)
                img.load()
                return _to_rgb(ImageOps.exif_transpose(img))
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        kind = _signature(data)
        if kind:
            raise CorruptImageError(path, f"damaged {kind} file (header unreadable)") from None
        raise NotAnImageError(path, "not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(path, f"decompression bomb guard: {exc}") from None
    except MemoryError:
        raise ImageTooLargeError(path, "not enough memory to decode the image") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on damaged data
        reason = str(exc).strip() or type(exc).__name__
        raise CorruptImageError(path, f"damaged or truncated image ({reason})") from None


_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"BM": "BMP",
}


def _signature(data: bytes) -> str | None:
    """The format a file's magic bytes claim, to tell 'damaged' from 'not an image'."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES.items() if data.startswith(magic)), None)


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise NotAnImageError(path, "is a directory, not an image file")
        if size > max_bytes:
            raise ImageTooLargeError(path, f"file has {size} bytes, limit is {max_bytes}")
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except IsADirectoryError:
        raise NotAnImageError(path, "is a directory, not an image file") from None


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Normalise any Pillow mode to uint8 RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(img)
    icc = img.info.get("icc_profile")
    if "A" in img.getbands() or img.mode in ("P", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode not in ("RGB", "CMYK", "L"):
        img = img.convert("RGB")
    if icc:
        img = _icc_to_srgb(img, icc)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _icc_to_srgb(img: Image.Image, icc: bytes) -> Image.Image:
    """Convert from an embedded profile (Display P3, Adobe RGB, CMYK...) to sRGB."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(img, source, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return img  # a broken profile is ignored, as viewers do


def _high_depth_to_rgb(img: Image.Image) -> np.ndarray:
    """16-bit / 32-bit grayscale to 8-bit by scaling, not clipping (Pillow clips)."""
    values = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        top = 1.0 if values.size and np.nanmax(values) <= 1.0 else 255.0
    else:
        top = 255.0 if values.size and values.max() <= 255 else 65535.0
    gray = np.clip(np.nan_to_num(values) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def encode_image(array: np.ndarray, format: str = "PNG", *, quality: int = 95) -> bytes:
    """Encode a uint8 array (H x W x 3 RGB, or H x W gray/bool) with no metadata.

    The Pillow image is built from raw pixels, so nothing of any source file
    (EXIF, XMP, IPTC, ICC, text or time chunks, comments) can travel along.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 or bool array, got {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"expected H x W or H x W x 3, got shape {array.shape}")
    img = Image.fromarray(array)
    buffer = io.BytesIO()
    fmt = format.upper().replace("JPG", "JPEG")
    if fmt == "JPEG":
        img.save(buffer, "JPEG", quality=quality, optimize=True)
    elif fmt == "PNG":
        img.save(buffer, "PNG", optimize=False, compress_level=6)
    else:
        raise ValueError(f"unsupported output format {format!r}: use PNG or JPEG")
    return buffer.getvalue()


def write_image(path: str | os.PathLike, array: np.ndarray, *, quality: int = 95) -> Path:
    """Write an image atomically and without metadata; format from the suffix.

    The bytes go to a temporary file in the same folder, are flushed to disk,
    and only then renamed over ``path``: readers never see a partial file.

    Examples
    --------
    >>> write_image("out/mask.png", np.zeros((4, 4), bool))  # doctest: +SKIP
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"{path}: output must end in .png, .jpg or .jpeg")
    data = encode_image(array, "PNG" if suffix == ".png" else "JPEG", quality=quality)
    atomic_write_bytes(path, data)
    return path


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask image as bool: any channel above mid-grey is foreground (what
    :func:`write_mask` writes reads back exactly)."""
    return read_image(path).max(axis=2) > 127


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Write a boolean mask as a metadata-free 8-bit PNG (0 / 255)."""
    return write_image(path, np.asarray(mask, dtype=bool))


#: How :func:`resize` interpolates: ``area`` (OpenCV's pixel-area average, for shrinking
#: photos), ``lanczos`` (Pillow's, for model inputs and outputs), ``nearest`` (masks).
RESIZE_METHODS = ("area", "lanczos", "nearest")


def resize(image: np.ndarray, size: tuple[int, int], *, method: str = "area") -> np.ndarray:
    """``image`` (uint8 H x W x 3, or a bool mask) at ``size`` = (height, width).

    >>> resize(np.zeros((64, 48, 3), np.uint8), (32, 24)).shape
    (32, 24, 3)
    >>> resize(np.ones((4, 4), bool), (8, 8), method="nearest").all()
    np.True_
    """
    height, width = size
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize method must be one of {RESIZE_METHODS}, not {method!r}")
    if np.asarray(image).dtype == bool:
        return resize(np.asarray(image, np.uint8), size, method=method) > 0
    if method == "lanczos":
        return np.asarray(Image.fromarray(image).resize((width, height), Image.LANCZOS))
    import cv2

    flag = cv2.INTER_AREA if method == "area" else cv2.INTER_NEAREST
    return cv2.resize(image, (width, height), interpolation=flag)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via temp file + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
