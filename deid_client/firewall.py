"""The firewall as a batch over a hospital's photos: surrogates, healthy twins, masks, manifest.

``OUT_DIR/surrogates/``, ``OUT_DIR/healthy/`` and ``OUT_DIR/masks/`` hold one PNG per
released photo under the same pseudonymous name, metadata-free and written
atomically; ``OUT_DIR/manifest.json`` records, per photo, its pseudonym, status,
target prompt, seed, seconds and lesion fraction (never an input file name), and
the settings used; ``OUT_DIR/contact_sheet.png`` is for the site's own review.

Photos are taken in their given order, ``batch_size`` per model call. A batch is
done when all of its photos are in the manifest; a rerun (after a crash, a
``SIGKILL``, or to add photos) redoes only unfinished batches, with the same
members, so its outputs are byte for byte those of an uninterrupted run. The
ClientApp's node preparation (``deid_client.node_data``) runs the same code into
its cache.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .backends import working_size
from .batch import USER_ERRORS
from .config import SurrogateConfig
from .audit import face_embedding
from .gate import judge
from .images import ImageReadError, atomic_write_bytes, read_image, write_image, write_mask
from .prompts import Attributes
from .pseudonyms import pseudonym
from .seeds import image_key, image_seed
from .surrogates import make_surrogates, photos_per_call

__all__ = ["Photo", "FirewallReport", "run_firewall", "folder_photos", "read_manifest", "MANIFEST", "OUTPUTS",
           "CONTACT_SHEET"]

MANIFEST = "manifest.json"
CONTACT_SHEET = "contact_sheet.png"
#: The output folders; a released photo has one PNG of the same name in each.
OUTPUTS = ("surrogates", "healthy", "masks")
_SHEET_ROWS = 12


@dataclass(frozen=True)
class Photo:
    """One photo to protect: ``load()`` gives it as uint8 RGB (or raises a user error);
    ``label`` names it in error lines on the site's console only; ``attributes`` is
    what is known of the patient (see ``deid_client.prompts``), if anything."""

    load: Callable[[], np.ndarray]
    label: str = ""
    attributes: Attributes | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike, attributes: Attributes | None = None) -> Photo:
        return cls(lambda: read_image(path), str(path), attributes)


@dataclass
class FirewallReport:
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


def run_firewall(
    backend,
    photos: Sequence[Photo],
    out_dir: str | os.PathLike,
    cfg: SurrogateConfig,
    *,
    secret: bytes | None = None,
    progress: bool = True,
) -> FirewallReport:
    """Surrogate, healthy twin and mask of every photo into ``out_dir`` (module docstring).

    Names are :func:`deid_client.pseudonyms.pseudonym` of the pixels with the site
    ``secret`` (``None``: an unkeyed content hash, for a node's private cache). A
    photo's target prompt and noise come from ``cfg`` and its pixels alone. The identity
    gate (``cfg.gate``) releases a surrogate or refuses it, after ``cfg.gate.retries`` new
    draws; a refused photo has no file. Bad photos are reported in
    :attr:`FirewallReport.errors` and skipped.
    """
    out = Path(out_dir)
    settings = _settings(cfg)
    manifest = read_manifest(out)
    if manifest and manifest.get("settings") != settings:
        raise ValueError(f"{out}: holds firewall outputs made with other settings; "
                         f"use a new output folder")
    _remove_stale_temporaries(out)
    batch_size = int(manifest.get("batch_size") or cfg.batch_size or _batch_for(backend, cfg))
    done = {e["pseudonym"]: e for e in manifest.get("photos", []) if e["status"] == "refused" or (
        e["status"] == "released" and all((out / d / f"{e['pseudonym']}.png").is_file() for d in OUTPUTS))}
    report = FirewallReport(out)
    errors: dict[str, dict] = {}
    seen: set[str] = set()
    bar = tqdm(total=len(photos), desc="firewall", unit="photo", disable=not progress)
    for start in range(0, len(photos), batch_size):
        chunk = photos[start:start + batch_size]
        loaded = []
        for photo in chunk:
            try:
                image = photo.load()
                key = image_key(image)
                name = pseudonym(image, secret) if secret else key[:20]
                if any(name == p.name for p in loaded) or name in seen:
                    continue  # the same photo twice: one surrogate
                cfg.prompts.check(photo.attributes)  # its attributes must be usable
                loaded.append(_Loaded(name, image, photo.attributes, key))
            except USER_ERRORS as exc:
                report.errors.append((photo.label, str(exc)))
                reason = exc.reason if isinstance(exc, ImageReadError) else _first_line(exc)
                errors[f"error-{len(errors)}"] = {"pseudonym": None, "status": "error",
                                                  "reason": reason}
        if loaded and not all(p.name in done for p in loaded):
            done |= _protect(backend, loaded, out, cfg)
            _write_manifest(out, settings, batch_size, done, errors)
        else:
            report.reused += len(loaded)
        for name in (p.name for p in loaded):
            seen.add(name)
            (report.released if done[name]["status"] == "released" else report.refused).append(name)
        bar.update(len(chunk))
    bar.close()
    _write_manifest(out, settings, batch_size, done, errors)
    write_image(out / CONTACT_SHEET, contact_sheet(out, report.released[:_SHEET_ROWS]))
    return report


class _Loaded(NamedTuple):
    name: str  # its pseudonym
    image: np.ndarray
    attributes: Attributes | None
    key: str  # seeds.image_key of its pixels, hashed once


def _identity_edit(cfg: SurrogateConfig, photo: _Loaded, draw: int = 0):
    """This photo's identity edit for its ``draw``-th try: a target drawn from its pixels'
    key (and the draw), so that it never depends on the other photos."""
    rng = np.random.default_rng(image_seed(cfg.identity.seed, _noise_key(photo.key, draw)))
    target = cfg.prompts.draw_targets(photo.attributes, 1, rng, min_change=cfg.min_change)[0]
    return cfg.identity.with_overrides(source_prompt=cfg.prompts.describe(photo.attributes),
                                       target_prompt=target)


def _noise_key(key: str, draw: int) -> str:
    return key if draw == 0 else f"{key}:draw{draw}"


def _protect(backend, loaded: list[_Loaded], out: Path, cfg: SurrogateConfig) -> dict[str, dict]:
    """One batch through the model and the identity gate (``deid_client.gate``), with new
    draws for the surrogates it stops; the released ones' files, then every manifest entry."""
    start = time.perf_counter()
    tried: dict[int, tuple] = {}  # photo -> (edit, surrogate, verdict) of its latest draw
    sides = [max(working_size(*p.image.shape[:2], cfg.identity.max_side)) for p in loaded]
    patients: dict[int, np.ndarray | None] = {}  # each patient's face embedding, made once
    pending = list(range(len(loaded)))
    for draw in range(cfg.gate.retries + 1):
        if not pending:
            break
        images = [loaded[i].image for i in pending]
        edits = [_identity_edit(cfg, loaded[i], draw) for i in pending]
        results = make_surrogates(backend, images, edits, cfg.twin, prompts=cfg.prompts, theta=cfg.theta,
                                  min_size=cfg.min_size, twin_from=cfg.twin_from, lesion=cfg.lesion,
                                  keys=[_noise_key(loaded[i].key, draw) for i in pending],
                                  batch_size=len(pending))
        for i, image, edit, result in zip(pending, images, edits, results, strict=True):
            if i not in patients and cfg.gate.enabled:
                patients[i] = face_embedding(image, resolution=sides[i])
            tried[i] = (edit, result, judge(image, result.image, result.healthy, cfg.gate,
                                            resolution=sides[i], patient_embedding=patients.get(i)))
        # a patient without a face cannot be audited on any draw: retrying only costs time
        pending = [i for i in pending if not tried[i][2].released and patients.get(i) is not None]
    seconds = (time.perf_counter() - start) / len(loaded)
    entries = {}
    for i, name in enumerate(p.name for p in loaded):
        edit, result, verdict = tried[i]
        distance = None if verdict.distance is None else round(verdict.distance, 4)
        if verdict.released:
            write_image(out / "surrogates" / f"{name}.png", result.image)
            write_image(out / "healthy" / f"{name}.png", result.healthy)
            write_mask(out / "masks" / f"{name}.png", result.mask)
        entries[name] = {"pseudonym": name, "status": "released" if verdict.released else "refused",
                         "reason": verdict.reason, "target_prompt": edit.target_prompt,
                         "seed": edit.seed, "seconds": round(seconds, 3),
                         "identity_distance": distance,
                         "lesion_fraction": round(float(result.mask.mean()), 6) if verdict.released else None}
    return entries


def contact_sheet(out_dir: str | os.PathLike, names: Sequence[str], *, side: int = 128) -> np.ndarray:
    """Rows of surrogate | healthy twin | mask over the surrogate, for the site's review."""
    from .figures import mask_overlay
    from .pairs import read_mask

    rows = []
    for name in names:
        surrogate = read_image(Path(out_dir) / "surrogates" / f"{name}.png")
        healthy = read_image(Path(out_dir) / "healthy" / f"{name}.png")
        overlay = mask_overlay(surrogate, read_mask(Path(out_dir) / "masks" / f"{name}.png"))
        rows.append(np.hstack([_fit(im, side) for im in (surrogate, healthy, overlay)]))
    return np.vstack(rows) if rows else np.full((side, 3 * side, 3), 255, np.uint8)


def _fit(image: np.ndarray, side: int) -> np.ndarray:
    import cv2

    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def _settings(cfg: SurrogateConfig) -> dict:
    # batch_size decides speed, not results; everything else decides the outputs
    return json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k != "batch_size"},
                                 default=str))


def _batch_for(backend, cfg: SurrogateConfig) -> int:
    # Probed at the largest size the identity edit works at: a batch that fits it fits any photo.
    probe = np.zeros((cfg.identity.max_side, cfg.identity.max_side, 3), np.uint8)
    return photos_per_call(backend, probe, cfg.identity, cfg.twin_from, cfg.lesion)


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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def folder_photos(data_dir: str | os.PathLike, *, size: int | None = None) -> list[Photo]:
    """The photos of a hospital folder: ``data_dir/images/`` if there is one, else
    ``data_dir`` itself, sorted by name. ``attributes.csv`` beside them (a ``file``
    column, then any of the prompts' attribute names, e.g. ``sex,skin_type``) says what
    is known of each patient, so that ``min_change`` applies. ``size``: resize each
    photo to ``size x size`` on loading.
    """
    root = Path(data_dir)
    folder = root / "images" if (root / "images").is_dir() else root
    known = _attributes_csv(root / "attributes.csv")

    def loader(path: Path) -> Callable[[], np.ndarray]:
        if size is None:
            return lambda: read_image(path)
        import cv2

        return lambda: cv2.resize(read_image(path), (size, size), interpolation=cv2.INTER_AREA)

    from .ingest import list_images

    return [Photo(loader(p), str(p), known.get(p.name) or known.get(p.stem)) for p in list_images(folder)]


def _attributes_csv(path: Path) -> dict[str, dict[str, str]]:
    import csv

    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "file" not in rows[0]:
        raise ValueError(f"{path}: needs a 'file' column (then attribute columns, e.g. sex,skin_type)")
    return {row["file"]: {k: v for k, v in row.items() if k != "file" and v} for row in rows}
