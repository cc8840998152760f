"""A node's local training data: where it comes from, its training masks, its cache.

A node is a hospital folder (``data_dir/images/``, optionally ``masks/`` and
``healthy/``) or a phantom partition. Training masks come from a *mask source*:

* ``surrogate`` (the default, the product): the firewall (``deid_client.firewall``,
  settings from the package's ``conf/surrogate.yaml``): every training photo is
  replaced by a FlowEdit surrogate of another synthetic person, and its mask is the
  a* difference to the surrogate's synthetic healthy twin. Nothing of the patient's
  face is trained on. The firewall writes into the node's cache and resumes there.
* research baselines: ``oracle`` (the differential mask against the exact healthy
  twin: phantoms, or a ``healthy/`` folder), ``naive`` (Otsu on a*), ``truth`` (the
  reference masks themselves, an upper bound).

Reference masks (``masks/``) are used only to score a held-out split of the site's
original photos. A folder without them trains on every photo and reports no score.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from .batch import USER_ERRORS
from .images import atomic_write_bytes, read_image
from .masks import differential_mask, naive_mask
from .pairs import read_mask

__all__ = ["MASK_SOURCES", "DataConfig", "NodeData", "load_node_data", "training_mask",
           "default_cache_dir"]

log = logging.getLogger(__name__)

MASK_SOURCES = ("surrogate", "oracle", "naive", "truth")


@dataclass(frozen=True)
class DataConfig:
    """Everything that decides a node's data (and so its cache key).

    ``firewall``: overrides of the firewall config (the run config's federation-wide
    ones, then the node's model and device); ``firewall_config``: a site's own YAML.
    """

    partition_id: int = 0
    num_partitions: int = 1
    data_dir: str = ""  # empty: phantom partition
    images_per_client: int = 48  # phantom partitions only
    image_size: int = 96
    mask_source: str = "surrogate"
    non_iid: float = 0.5
    eval_fraction: float = 0.25
    seed: int = 0
    firewall: tuple[str, ...] = field(default_factory=tuple)
    firewall_config: str = ""

    def __post_init__(self):
        if self.mask_source not in MASK_SOURCES:
            raise ValueError(f"mask-source must be one of {MASK_SOURCES}, not {self.mask_source!r}")
        if not 0 <= self.partition_id < self.num_partitions:
            raise ValueError(f"partition-id {self.partition_id} outside 0..{self.num_partitions - 1}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError("eval-fraction must be between 0 and 1")

    def surrogate_config(self):
        """The firewall's settings for this node (``deid_client.config.compose_surrogate``)."""
        from .config import compose_surrogate

        return compose_surrogate(list(self.firewall), self.firewall_config or None)

    def key(self) -> str:
        """Cache key: the settings (with the firewall's: all of them for ``surrogate``,
        θ for ``oracle``) and, for a folder, every file's name, size and mtime (a site
        that adds or replaces photos, or changes the firewall, must not train on a stale
        cache)."""
        settings = asdict(self)
        del settings["firewall"], settings["firewall_config"]  # their effect is below
        if self.mask_source == "surrogate":
            # batch_size decides speed, not the surrogates: it stays out of the key
            settings["surrogate"] = {k: v for k, v in asdict(self.surrogate_config()).items()
                                     if k != "batch_size"}
        elif self.mask_source == "oracle":
            settings["theta"] = self.surrogate_config().theta
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


def training_mask(image: np.ndarray, healthy: np.ndarray | None, truth: np.ndarray | None,
                  source: str, theta: float) -> np.ndarray:
    """The mask a site trains on, from a research mask source (not ``surrogate``)."""
    if source == "oracle":
        if healthy is None:
            raise ValueError("mask-source 'oracle' needs a healthy twin for every image "
                             "(data-dir/healthy/); the firewall (mask-source 'surrogate') does not")
        return differential_mask(image, healthy, theta)
    if source == "naive":
        return naive_mask(image)
    if truth is None:
        raise ValueError("mask-source 'truth' needs reference masks (data-dir/masks/)")
    return truth


def default_cache_dir() -> Path:
    """``$DEID_CACHE_DIR``, else ``~/.cache/deid-client`` (a node config's cache-dir wins)."""
    return Path(os.environ.get("DEID_CACHE_DIR") or Path.home() / ".cache" / "deid-client")


def load_node_data(config: DataConfig, cache_dir: str | os.PathLike | None = None) -> NodeData:
    """The node's data, prepared once and cached as ``node-data-<key>.npz`` in ``cache_dir``
    (the firewall's own outputs, resumable, in ``firewall-<key>/`` beside it)."""
    key = config.key()
    cache = None if cache_dir is None else Path(cache_dir) / f"node-data-{key}.npz"
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            return NodeData(**{k: stored[k] for k in stored.files})
    with tempfile.TemporaryDirectory(prefix="deid-firewall-") as scratch:
        firewall_dir = Path(scratch) if cache_dir is None else Path(cache_dir) / f"firewall-{key}"
        data = _prepare(config, firewall_dir)
    if cache is not None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **asdict(data))
        atomic_write_bytes(cache, buffer.getvalue())  # never a half-written cache
    return data


class _Sample(NamedTuple):
    image: np.ndarray  # uint8 RGB photo
    healthy: np.ndarray | None  # its healthy twin, where there is one
    truth: np.ndarray | None  # its reference lesion mask, where there is one
    attributes: dict | None  # what is known of the patient (phantoms; a site's attributes.csv)


def _prepare(config: DataConfig, firewall_dir: Path) -> NodeData:
    samples = _folder_samples(config) if config.data_dir else _phantom_samples(config)
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
    if config.mask_source == "surrogate":
        train_images, train_masks = _surrogates(train, config, firewall_dir)
    else:
        theta = config.surrogate_config().theta
        train_images = np.stack([s.image for s in train])
        train_masks = np.stack([training_mask(s.image, s.healthy, s.truth, config.mask_source, theta)
                                for s in train])
    size = (0, config.image_size, config.image_size)
    return NodeData(
        train_images=train_images,
        train_masks=train_masks,
        eval_images=np.stack([s.image for s in held_out]) if held_out else np.zeros(size + (3,), np.uint8),
        eval_masks=np.stack([s.truth for s in held_out]) if held_out else np.zeros(size, bool),
    )


def _surrogates(samples: list[_Sample], config: DataConfig,
                firewall_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The training photos through the firewall (``deid_client.firewall``): surrogates
    and their masks, read back from the firewall's output folder."""
    from .firewall import Photo, run_firewall

    cfg = config.surrogate_config()
    photos = [Photo(lambda s=s: s.image, f"photo {i}", s.attributes) for i, s in enumerate(samples)]
    report = run_firewall(cfg.model.load(), photos, firewall_dir, cfg, progress=True)
    for label, error in report.errors:
        log.warning("firewall skipped %s: %s", label, error)
    if not report.released:
        raise ValueError("no photo made it through the firewall")
    images = [read_image(firewall_dir / "surrogates" / f"{n}.png") for n in report.released]
    masks = [read_mask(firewall_dir / "masks" / f"{n}.png") for n in report.released]
    return np.stack(images), np.stack(masks)


def _phantom_samples(config: DataConfig) -> list[_Sample]:
    """This node's phantom patients."""
    from .phantom import plan_cohort, render_case
    from .phantom_flow.prompts import attributes_of

    cases = plan_cohort(config.images_per_client * config.num_partitions, config.num_partitions,
                        seed=config.seed, non_iid=config.non_iid)
    mine = [render_case(c, config.image_size) for c in cases if c.hospital == config.partition_id]
    return [_Sample(p.image, p.healthy, p.mask, attributes_of(p.identity)) for p in mine]


def _folder_samples(config: DataConfig) -> list[_Sample]:
    """``data_dir/images/`` (through :func:`deid_client.firewall.folder_photos`), with
    ``masks/`` and ``healthy/`` matched by file stem where they exist. Unreadable files
    are skipped with one warning each: the node goes on with the rest."""
    from .firewall import folder_photos
    from .ingest import list_images

    root = Path(config.data_dir)
    if not root.is_dir():
        raise ValueError(f"data-dir {root}: not a folder")
    side = config.image_size
    others = {name: {p.stem: p for p in list_images(root / name)} if (root / name).is_dir() else {}
              for name in ("masks", "healthy")}
    samples = []
    for photo in folder_photos(root, size=side):
        stem = Path(photo.label).stem
        try:
            image = photo.load()
            mask = others["masks"].get(stem)
            healthy = others["healthy"].get(stem)
            truth = None if mask is None else cv2.resize(
                read_mask(mask).astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST) > 0
            twin = None if healthy is None else cv2.resize(read_image(healthy), (side, side),
                                                           interpolation=cv2.INTER_AREA)
        except USER_ERRORS as exc:
            log.warning("skipped %s", exc)
            continue
        samples.append(_Sample(image, twin, truth, photo.attributes))
    return samples
