"""Sanitised copies of a folder of photos: metadata-free, under pseudonyms (``deid-client ingest``).

A site tool beside the firewall (which reads photos itself): it lets a site keep or share
its photos without their file names and metadata."""

from __future__ import annotations

import os
from pathlib import Path

from deid_client.io.files import FileReport, each_file
from deid_client.io.images import DEFAULT_MAX_PIXELS, list_images, read_image, write_image
from deid_client.io.pseudonyms import pseudonym

__all__ = ["ingest_file", "ingest_folder"]


def ingest_file(
    path: str | os.PathLike,
    output_dir: str | os.PathLike,
    secret: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Path:
    """Read one photo safely and write it as ``<pseudonym>.png`` with no metadata.

    An output that already exists is kept as it is, so an interrupted batch
    resumes without redoing (or losing) finished work.
    """
    image = read_image(path, max_pixels=max_pixels)
    target = Path(output_dir) / f"{pseudonym(image, secret)}.png"
    if not target.exists():
        write_image(target, image)
    return target


def ingest_folder(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    secret: bytes,
    *,
    recursive: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> FileReport[Path, Path]:
    """Ingest every image in a folder; bad files are reported, good ones finish."""
    return each_file(
        list_images(input_dir, recursive=recursive),
        lambda p: ingest_file(p, output_dir, secret, max_pixels=max_pixels),
        desc="ingest",
        progress=progress,
    )
