"""The firewall over a hospital's folder of photos: outputs, manifest, resume.

``OUT_DIR/surrogates/``, ``OUT_DIR/healthy/`` and ``OUT_DIR/masks/`` hold one PNG per
released photo under the same pseudonymous name, metadata-free and written
atomically (with ``surrogates_per_photo`` K > 1: K per photo, ``<pseudonym>-<k>``);
``OUT_DIR/manifest.json`` records, per surrogate, its pseudonym (and the photo's, where
K > 1), status, target prompt, seed, seconds and lesion fraction (never an input file
name), and the settings used; ``OUT_DIR/contact_sheet.png`` is for the site's own review
(``deid_client.firewall.report``).

Photos are taken in their given order, ``batch_size`` per model call, through one
:class:`~deid_client.firewall.firewall.Firewall`. A batch is done when all of its photos
are in the manifest; a rerun (after a crash, a ``SIGKILL``, or to add photos) redoes only
unfinished batches, with the same members, so its outputs are byte for byte those of an
uninterrupted run. A node's data preparation (``deid_client.task.data``) runs the same
code into its cache.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from deid_client.editing.seeds import image_key
from deid_client.firewall.firewall import Firewall, Result, surrogate_key
from deid_client.editing.prompts import Attributes
from deid_client.firewall.config import settings_record
from deid_client.firewall.report import CONTACT_SHEET, contact_sheet
from deid_client.io.files import USER_ERRORS, first_line
from deid_client.io.images import (IMAGE_SUFFIXES, ImageReadError, atomic_write_bytes, list_images,
                                   read_image, read_mask, resize, write_image, write_mask)
from deid_client.io.pseudonyms import pseudonym

__all__ = ["Photo", "FolderReport", "run_folder", "folder_photos", "not_photos", "read_manifest",
           "read_outputs", "MANIFEST", "OUTPUTS", "CONTACT_SHEET"]

MANIFEST = "manifest.json"
#: The output folders; a released photo has one PNG of the same name in each.
OUTPUTS = ("surrogates", "healthy", "masks")
_SHEET_ROWS = 12


@dataclass(frozen=True)
class Photo:
    """One photo to protect: ``load()`` gives it as uint8 RGB (or raises a user error);
    ``label`` names it in error lines on the site's console only; ``attributes`` is
    what is known of the patient (see ``deid_client.editing.prompts``), if anything."""

    load: Callable[[], np.ndarray]
    label: str = ""
    attributes: Attributes | None = None


@dataclass
class FolderReport:
    """What a run did: pseudonyms released and refused (in the photos' order, including
    those done by an earlier run), one-line errors by label, and where it wrote."""

    out_dir: Path
    released: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # the identity gate said no: no file written
    errors: list[tuple[str, str]] = field(default_factory=list)
    reused: int = 0  # done by an earlier run of the same folder

    @property
    def ok(self) -> bool:
        return not self.errors


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """The manifest of a firewall output folder (``{}`` if there is none yet)."""
    path = Path(out_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def read_outputs(out_dir: str | os.PathLike, names: Sequence[str], output: str) -> np.ndarray:
    """One of a firewall output folder's :data:`OUTPUTS` for the released photos ``names``,
    stacked in their order (``masks`` as bool).

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = write_mask(out / "masks" / "ab12.png", np.eye(4, dtype=bool))
    >>> masks = read_outputs(out, ["ab12"], "masks")
    >>> masks.shape, masks.dtype, int(masks.sum())
    ((1, 4, 4), dtype('bool'), 4)
    """
    if output not in OUTPUTS:
        raise ValueError(f"no firewall output {output!r} (there are: {', '.join(OUTPUTS)})")
    read = read_mask if output == "masks" else read_image
    return np.stack([read(Path(out_dir) / output / f"{name}.png") for name in names])


def run_folder(firewall: Firewall, photos: Sequence[Photo], out_dir: str | os.PathLike, *,
               secret: bytes | None = None, progress: bool = True) -> FolderReport:
    """Surrogate, healthy twin and mask of every photo into ``out_dir`` (module docstring).

    Names are :func:`deid_client.io.pseudonyms.pseudonym` of the pixels with the site
    ``secret`` (``None``: an unkeyed content hash, for a node's private cache). A refused
    photo has no file. Bad photos are reported in :attr:`FolderReport.errors` and skipped.
    """
    out = Path(out_dir)
    settings = settings_record(firewall.cfg)
    manifest = read_manifest(out)
    if manifest and manifest.get("settings") != settings:
        raise ValueError(f"{out}: holds firewall outputs made with other settings; use a new output folder")
    _remove_stale_temporaries(out)
    batch_size = int(manifest.get("batch_size") or firewall.photos_per_call())
    per_photo = firewall.cfg.surrogates_per_photo
    done = {e["pseudonym"]: e for e in manifest.get("photos", []) if e["status"] == "refused" or (
        e["status"] == "released" and all((out / d / f"{e['pseudonym']}.png").is_file() for d in OUTPUTS))}
    report = FolderReport(out)
    errors: dict[str, dict] = {}
    seen: set[str] = set()
    bar = tqdm(total=len(photos), desc="firewall", unit="photo", disable=not progress)
    for start in range(0, len(photos), batch_size):
        chunk = photos[start:start + batch_size]
        names, images, attributes, keys, photo_of = [], [], [], [], []  # the chunk's surrogates to make
        chunk_photos: set[str] = set()  # the chunk's photos that load
        for photo in chunk:
            try:
                image = photo.load()
                key = image_key(image)
                name = pseudonym(image, secret) if secret else key[:20]
                if name in chunk_photos or name in seen:
                    continue  # the same photo twice: one surrogate
                firewall.cfg.prompts.check(photo.attributes)  # its attributes must be usable
            except USER_ERRORS as exc:
                report.errors.append((photo.label, str(exc)))
                reason = exc.reason if isinstance(exc, ImageReadError) else first_line(exc)
                errors[f"error-{len(errors)}"] = {"pseudonym": None, "status": "error", "reason": reason}
                continue
            chunk_photos.add(name)
            for k in range(per_photo):  # surrogate k draws from its own key: target and noise
                names.append(name if per_photo == 1 else f"{name}-{k}")
                images.append(image)
                attributes.append(photo.attributes)
                keys.append(surrogate_key(key, k))
                photo_of.append(name)
        if names and not all(n in done for n in names):
            started = time.perf_counter()
            results = firewall(images, attributes, keys=keys, batch_size=len(images))
            seconds = (time.perf_counter() - started) / len(images)
            done |= {n: _write(out, n, r, seconds, p if per_photo > 1 else None)
                     for n, r, p in zip(names, results, photo_of, strict=True)}
            _write_manifest(out, settings, batch_size, done, errors)
        else:
            report.reused += len(names)
        seen |= chunk_photos
        for name in names:
            (report.released if done[name]["status"] == "released" else report.refused).append(name)
        bar.update(len(chunk))
    bar.close()
    _write_manifest(out, settings, batch_size, done, errors)
    write_image(out / CONTACT_SHEET, contact_sheet(out, report.released[:_SHEET_ROWS]))
    return report


def _write(out: Path, name: str, result: Result, seconds: float, photo: str | None = None) -> dict:
    """A released result's three PNGs; every result's manifest entry (``photo``: the
    pseudonym of the photo it was made from, where a photo has several)."""
    verdict = result.verdict
    if result.released:
        write_image(out / "surrogates" / f"{name}.png", result.surrogate)
        write_image(out / "healthy" / f"{name}.png", result.twin)
        write_mask(out / "masks" / f"{name}.png", result.mask)
    return {"pseudonym": name, **({"photo": photo} if photo else {}),
            "status": "released" if result.released else "refused",
            "reason": verdict.reason, "target_prompt": result.target, "seed": result.seed,
            "seconds": round(seconds, 3),
            "identity_distance": None if verdict.distance is None else round(verdict.distance, 4),
            "lesion_fraction": round(float(result.mask.mean()), 6) if result.released else None}


def _write_manifest(out: Path, settings: dict, batch_size: int, done: dict, errors: dict) -> None:
    photos = [done[k] for k in sorted(done)] + list(errors.values())
    atomic_write_bytes(out / MANIFEST, json.dumps(
        {"settings": settings, "batch_size": batch_size,
         "released": sum(e["status"] == "released" for e in done.values()),
         "refused": sum(e["status"] == "refused" for e in done.values()),
         "errors": len(errors), "photos": photos}, indent=2).encode() + b"\n")


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files of a write that was killed (``atomic_write_bytes`` names them)."""
    for folder in (out, *(out / d for d in OUTPUTS)):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
            tmp.unlink(missing_ok=True)


def photo_folder(data_dir: str | os.PathLike) -> Path:
    """Where a hospital folder's photos are: ``data_dir/images/`` if there is one, else ``data_dir``."""
    root = Path(data_dir)
    return root / "images" if (root / "images").is_dir() else root


def folder_photos(data_dir: str | os.PathLike, *, size: int | None = None) -> list[Photo]:
    """The photos of a hospital folder (:func:`photo_folder`), sorted by name.
    ``attributes.csv`` beside them (a ``file`` column, then any of the prompts' attribute
    names, e.g. ``sex,skin_type``) says what is known of each patient, so that
    ``min_change`` applies. ``size``: resize each photo to ``size x size`` on loading.
    """
    root = Path(data_dir)
    known = _attributes_csv(root / "attributes.csv")

    def loader(path: Path) -> Callable[[], np.ndarray]:
        if size is None:
            return lambda: read_image(path)
        return lambda: resize(read_image(path), (size, size))

    return [Photo(loader(p), str(p), known.get(p.name) or known.get(p.stem))
            for p in list_images(photo_folder(root))]


def not_photos(data_dir: str | os.PathLike) -> Counter:
    """Files of a hospital's photo folder that are not taken as photos, by suffix (e.g.
    ``.heic``, ``.dcm``): a site sees what the firewall leaves out."""
    folder = photo_folder(data_dir)
    return Counter(p.suffix.lower() or "(no suffix)" for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name != "attributes.csv"
                   and p.suffix.lower() not in IMAGE_SUFFIXES)


def _attributes_csv(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "file" not in rows[0]:
        raise ValueError(f"{path}: needs a 'file' column (then attribute columns, e.g. sex,skin_type)")
    return {row["file"]: {k: v for k, v in row.items() if k != "file" and v} for row in rows}
