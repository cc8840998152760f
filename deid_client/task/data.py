"""A node's local data: its photos through the firewall, a held-out split, its cache.

A node is a hospital folder (``data_dir/images/``, optionally reference masks in
``masks/``) or, with no folder, a partition of the phantom world
(:func:`deid_client.phantom.partition`). Every training photo goes through the firewall
(``deid_client.firewall``): it is replaced by FlowEdit surrogates of other synthetic
people, and each surrogate's mask is the a* difference to its synthetic healthy twin.
Nothing of the patient's face is trained on. The firewall writes into the node's cache
and resumes there.

The run config's ``mask-source`` is ``surrogate``, the firewall, for every site. The
research baselines (``oracle``, ``naive``, ``truth``) are not part of the product: they
live in the repository's lab (``research/mask_sources.py``), which a simulation run from
a checkout plugs in by naming one (:func:`training_source`).

Reference masks (``masks/``) are used only to score a held-out split of the site's
original photos. A folder without them trains on every photo and reports no score.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from deid_client.io.files import USER_ERRORS
from deid_client.io.images import atomic_write_bytes, read_mask, resize
from deid_client.io.images import list_images

__all__ = ["SURROGATE", "DataConfig", "NodeData", "Sample", "load_node_data", "phantom_samples",
           "training_source"]

log = logging.getLogger(__name__)

#: The product's mask source: the firewall.
SURROGATE = "surrogate"
#: Where the research mask sources live (a checkout of the repository, or its Flower app).
_LAB_SOURCES = "research.mask_sources"


@dataclass(frozen=True)
class DataConfig:
    """Everything that decides a node's data (and so its cache key).

    The first fields are run-config keys under their snake_case names (``image_size`` is
    ``image-size``); their defaults live in the run config alone (``pyproject.toml``,
    read by ``deid_client.task.settings``). The rest are the node's: its partition or folder.
    ``firewall``: overrides of the firewall config (the run config's federation-wide ones,
    then the node's model and device); ``firewall_config``: a site's own YAML.
    """

    images_per_client: int  # phantom partitions only
    image_size: int
    mask_source: str
    non_iid: float
    eval_fraction: float
    seed: int
    partition_id: int = field(default=0, metadata={"node": True})
    num_partitions: int = field(default=1, metadata={"node": True})
    data_dir: str = field(default="", metadata={"node": True})  # empty: phantom partition
    firewall: tuple[str, ...] = field(default_factory=tuple, metadata={"node": True})
    firewall_config: str = field(default="", metadata={"node": True})

    def __post_init__(self):
        training_source(self.mask_source)  # an unknown source fails here, in one line
        if not 0 <= self.partition_id < self.num_partitions:
            raise ValueError(f"partition-id {self.partition_id} outside 0..{self.num_partitions - 1}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError("eval-fraction must be between 0 and 1")

    @functools.cached_property
    def firewall_settings(self):
        """The firewall's settings for this node, composed once per config
        (``deid_client.firewall.compose_firewall``)."""
        from deid_client.firewall.config import compose_firewall

        return compose_firewall(list(self.firewall), self.firewall_config or None)

    def key(self) -> str:
        """Cache key: the settings (with the firewall's: all of them for ``surrogate``,
        θ for a research source) and, for a folder, every file's name, size and mtime (a
        site that adds or replaces photos, or changes the firewall, must not train on a
        stale cache)."""
        from deid_client.firewall.config import settings_record

        settings = asdict(self)
        del settings["firewall"], settings["firewall_config"]  # their effect is below
        if self.mask_source == SURROGATE:
            settings["surrogate"] = settings_record(self.firewall_settings)
        elif training_source(self.mask_source).needs_theta:
            settings["theta"] = self.firewall_settings.theta
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
        if self.data_dir:
            root = Path(self.data_dir)
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                stat = path.stat()
                digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]


@dataclass
class NodeData:
    train_images: np.ndarray  # uint8 N x S x S x 3
    train_masks: np.ndarray  # bool N x S x S, from the mask source
    eval_images: np.ndarray  # the site's own photos, held out (none without reference masks)
    eval_masks: np.ndarray  # bool, reference masks


class Sample(NamedTuple):
    """One of a node's photos, with what is known of it."""

    image: np.ndarray  # uint8 RGB photo
    truth: np.ndarray | None  # its reference lesion mask, where there is one
    attributes: dict | None  # what is known of the patient (phantoms; a site's attributes.csv)
    name: str  # a folder photo's file stem; a phantom's case id
    twin: np.ndarray | None = None  # its exact healthy twin, where the world knows it (phantoms)


def training_source(name: str) -> Callable | None:
    """``None`` for the firewall (``surrogate``); else the research mask source ``name``
    from the repository's lab (``research/mask_sources.py``: ``source(samples, config)``
    -> (images, masks)), which a wheel does not carry."""
    if name == SURROGATE:
        return None
    try:
        lab = importlib.import_module(_LAB_SOURCES)
    except ImportError:
        raise ValueError(f"mask-source {name!r}: the product trains on {SURROGATE!r} only; the "
                         f"research sources run from a checkout of the repository") from None
    if name not in lab.SOURCES:
        raise ValueError(f"mask-source must be one of {(SURROGATE, *lab.SOURCES)}, not {name!r}")
    return lab.SOURCES[name]


def load_node_data(config: DataConfig, cache_dir: str | os.PathLike | None = None, *,
                   key: str | None = None) -> NodeData:
    """The node's data, prepared once and cached in ``cache_dir`` (``None``: not cached).

    ``key``: the config's :meth:`DataConfig.key`, where the caller remembers it from an
    earlier round (computing it composes the firewall's settings and reads every file's
    size and time).

    With the firewall (``surrogate``) the training pairs are the firewall's own output
    folder, ``firewall-<key>/`` (resumable, read back from its PNGs); the held-out split
    and the released names are in ``node-data-<key>.npz``. A research mask source has its
    training arrays in that file too (they are not the firewall's).
    """
    key = key or config.key()
    firewall_dir = None if cache_dir is None else Path(cache_dir) / f"firewall-{key}"
    cache = None if cache_dir is None else Path(cache_dir) / f"node-data-{key}.npz"
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            arrays = {k: stored[k] for k in stored.files}
        if "released" in arrays:
            released = arrays.pop("released")
            arrays["train_images"], arrays["train_masks"] = _firewall_pairs(firewall_dir, released)
        return NodeData(**arrays)
    with tempfile.TemporaryDirectory(prefix="deid-firewall-") as scratch:
        data, released = _prepare(config, firewall_dir or Path(scratch))
    if cache is not None:
        arrays = asdict(data)
        if released is not None:  # the firewall's own folder holds the training pairs
            del arrays["train_images"], arrays["train_masks"]
            arrays["released"] = np.array(released)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(cache, buffer.getvalue())  # never a half-written cache
    return data


def _prepare(config: DataConfig, firewall_dir: Path) -> tuple[NodeData, list[str] | None]:
    """The node's data, and the pseudonyms of the firewall's released photos (None for
    a research mask source)."""
    samples = _folder_samples(config) if config.data_dir else phantom_samples(config)
    scored = [i for i, s in enumerate(samples) if s.truth is not None]
    if not samples:
        raise ValueError(f"{config.data_dir}: no readable photos")
    n_eval = max(1, int(round(len(scored) * config.eval_fraction))) if len(scored) > 1 else 0
    held = set(scored[-n_eval:]) if n_eval else set()
    if not held:
        log.warning("no reference masks (data-dir/masks/): this node trains on all %d photos "
                    "and reports no held-out score", len(samples))
    train = [s for i, s in enumerate(samples) if i not in held]
    held_out = [samples[i] for i in sorted(held)]
    if not train:
        raise ValueError("a node needs photos to train on besides its held-out split")
    released = None
    source = training_source(config.mask_source)
    if source is None:
        released = _through_firewall(train, config, firewall_dir)
        train_images, train_masks = _firewall_pairs(firewall_dir, released)
    else:
        train_images, train_masks = source(train, config)
    size = (0, config.image_size, config.image_size)
    return NodeData(
        train_images=train_images,
        train_masks=train_masks,
        eval_images=np.stack([s.image for s in held_out]) if held_out else np.zeros(size + (3,), np.uint8),
        eval_masks=np.stack([s.truth for s in held_out]) if held_out else np.zeros(size, bool),
    ), released


def _through_firewall(samples: list[Sample], config: DataConfig, firewall_dir: Path) -> list[str]:
    """The training photos through the firewall's folder batch into ``firewall_dir``; the
    released photos' names, in order."""
    from deid_client.editing.backends import load_backend
    from deid_client.firewall import Firewall, Photo, run_folder

    cfg = config.firewall_settings
    photos = [Photo(lambda s=s: s.image, f"photo {i}", s.attributes) for i, s in enumerate(samples)]
    report = run_folder(Firewall(cfg, load_backend(cfg.model)), photos, firewall_dir, progress=True)
    for label, error in report.errors:
        log.warning("firewall skipped %s: %s", label, error)
    if not report.released:
        raise ValueError("no photo made it through the firewall")
    return report.released


def _firewall_pairs(firewall_dir: Path, names) -> tuple[np.ndarray, np.ndarray]:
    """The firewall's released surrogates and masks, read from its output folder."""
    from deid_client.firewall.folder import read_outputs

    return read_outputs(firewall_dir, names, "surrogates"), read_outputs(firewall_dir, names, "masks")


def phantom_samples(config: DataConfig) -> list[Sample]:
    """This node's phantom patients: photo, exact mask, attributes, exact twin."""
    from deid_client.phantom import partition
    from deid_client.phantom.language import attributes_of

    mine = partition(config.images_per_client * config.num_partitions, config.num_partitions,
                     config.partition_id, size=config.image_size, seed=config.seed,
                     non_iid=config.non_iid)
    return [Sample(p.image, p.mask, attributes_of(p.identity), case.case_id, p.twin) for case, p in mine]


def _folder_samples(config: DataConfig) -> list[Sample]:
    """``data_dir/images/`` (through :func:`deid_client.firewall.folder_photos`), with
    ``masks/`` matched by file stem where they exist. Unreadable files are skipped with
    one warning each: the node goes on with the rest."""
    from deid_client.firewall.folder import folder_photos, not_photos

    root = Path(config.data_dir)
    if not root.is_dir():
        raise ValueError(f"data-dir {root}: not a folder")
    others = not_photos(root)
    if others:
        log.warning("%d files in %s not taken as photos (%s)", sum(others.values()), root,
                    ", ".join(f"{n} {s}" for s, n in sorted(others.items())))
    side = config.image_size
    masks = {p.stem: p for p in list_images(root / "masks")} if (root / "masks").is_dir() else {}
    samples = []
    for photo in folder_photos(root, size=side):
        stem = Path(photo.label).stem
        try:
            image = photo.load()
            mask = masks.get(stem)
            truth = None if mask is None else resize(read_mask(mask), (side, side), method="nearest")
        except USER_ERRORS as exc:
            log.warning("skipped %s", exc)
            continue
        samples.append(Sample(image, truth, photo.attributes, stem))
    return samples
