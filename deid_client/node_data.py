"""A node's local training data: where it comes from, its training masks, its cache.

Training masks come from a pluggable *mask source*:

* ``oracle``: the differential mask against the exact healthy twin (phantoms, or
  a ``healthy/`` folder), the stand-in for the FlowEdit firewall stage;
* ``naive``: the original-only baseline (Otsu on a*);
* ``truth``: the reference masks themselves (an upper bound);
* ``surrogate``: the firewall stage itself (``deid_client.surrogates``, settings
  from ``conf/surrogate.yaml``): every training photo is replaced by a FlowEdit
  surrogate of another synthetic person, and its mask is the a* difference to
  the surrogate's synthetic healthy twin. Nothing of the patient's face is
  trained on. The cache key includes the firewall's settings.

Evaluation always uses reference masks on the site's original photos, on a
held-out split.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from .images import atomic_write_bytes, read_image
from .masks import differential_mask, naive_mask
from .pairs import read_mask, triples_from_folders
from .phantom import Identity, plan_cohort, render_case

__all__ = ["MASK_SOURCES", "DataConfig", "NodeData", "load_node_data", "training_mask",
           "default_cache_dir"]

MASK_SOURCES = ("oracle", "naive", "truth", "surrogate")


@dataclass(frozen=True)
class DataConfig:
    """Everything that decides a node's data (and so its cache key)."""

    partition_id: int = 0
    num_partitions: int = 1
    data_dir: str = ""  # empty: phantom partition
    images_per_client: int = 48
    image_size: int = 96
    mask_source: str = "oracle"
    theta: float = 5.0
    non_iid: float = 0.5
    eval_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self):
        if self.mask_source not in MASK_SOURCES:
            raise ValueError(f"mask-source must be one of {MASK_SOURCES}, not {self.mask_source!r}")
        if not 0 <= self.partition_id < self.num_partitions:
            raise ValueError(f"partition-id {self.partition_id} outside 0..{self.num_partitions - 1}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError("eval-fraction must be between 0 and 1")

    def key(self) -> str:
        """Cache key: the settings (with ``mask_source="surrogate"``, the firewall's too)
        and, for a folder, every file's name, size and mtime (a site that adds or replaces
        photos, or changes ``conf/surrogate.yaml``, must not train on a stale cache)."""
        settings = asdict(self)
        if self.mask_source == "surrogate":
            from .config import compose_surrogate

            # batch_size decides speed, not the surrogates: it stays out of the key
            settings["surrogate"] = {k: v for k, v in asdict(compose_surrogate()).items()
                                     if k != "batch_size"}
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
    eval_images: np.ndarray
    eval_masks: np.ndarray  # bool, reference masks


def training_mask(image: np.ndarray, healthy: np.ndarray | None, truth: np.ndarray | None,
                  source: str, theta: float) -> np.ndarray:
    """The mask a site trains on, from the configured source."""
    if source == "oracle":
        if healthy is None:
            raise ValueError("mask-source 'oracle' needs a healthy twin for every image")
        return differential_mask(image, healthy, theta)
    if source == "naive":
        return naive_mask(image)
    if truth is None:
        raise ValueError("mask-source 'truth' needs reference masks")
    return truth


def default_cache_dir() -> Path:
    """``$DEID_CACHE_DIR``, else ``~/.cache/deid-client`` (a node config's cache-dir wins)."""
    return Path(os.environ.get("DEID_CACHE_DIR") or Path.home() / ".cache" / "deid-client")


def load_node_data(config: DataConfig, cache_dir: str | os.PathLike | None = None) -> NodeData:
    """The node's data, prepared once and cached as ``node-data-<key>.npz`` in ``cache_dir``."""
    cache = None if cache_dir is None else Path(cache_dir) / f"node-data-{config.key()}.npz"
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            return NodeData(**{k: stored[k] for k in stored.files})
    data = _prepare(config)
    if cache is not None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **asdict(data))
        atomic_write_bytes(cache, buffer.getvalue())  # never a half-written cache
    return data


class _Sample(NamedTuple):
    image: np.ndarray  # uint8 RGB photo
    healthy: np.ndarray | None  # its healthy twin, where there is one
    truth: np.ndarray | None  # its reference lesion mask, where there is one
    person: Identity | None  # who it shows (phantoms); nothing is known of a real photo


def _prepare(config: DataConfig) -> NodeData:
    samples = _folder_samples(config) if config.data_dir else _phantom_samples(config)
    if len(samples) < 2:
        raise ValueError("a node needs at least two images (one to train, one to evaluate)")
    n_eval = max(1, int(round(len(samples) * config.eval_fraction)))
    train, held_out = samples[:-n_eval], samples[-n_eval:]
    if any(s.truth is None for s in held_out):
        raise ValueError("the held-out split needs reference masks")
    if config.mask_source == "surrogate":
        train_images, train_masks = _surrogates(train, config)
    else:
        train_images = np.stack([s.image for s in train])
        train_masks = np.stack([training_mask(s.image, s.healthy, s.truth, config.mask_source,
                                              config.theta) for s in train])
    return NodeData(
        train_images=train_images,
        train_masks=train_masks,
        eval_images=np.stack([s.image for s in held_out]),
        eval_masks=np.stack([s.truth for s in held_out]),
    )


def _surrogates(samples: list[_Sample], config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Surrogate photos and their masks (the firewall stage, ``conf/surrogate.yaml``) of
    the samples' photos. A phantom patient is captioned as the model knows them and
    gets a surrogate ``min_change`` steps away; of a photo alone nothing is known, so
    its source prompt is the generic one and its target random."""
    from .config import compose_surrogate
    from .phantom_flow.prompts import prompt_for
    from .surrogates import make_surrogates, surrogate_targets

    cfg = compose_surrogate()
    backend = cfg.model.load()
    rng = np.random.default_rng([config.seed, config.partition_id, 0x5A])
    edits = []
    for sample in samples:
        target = surrogate_targets(sample.person, 1, rng, min_change=cfg.min_change)[0]
        settings = cfg.identity.with_overrides(target_prompt=target, seed=config.seed)
        if sample.person is not None:
            settings = settings.with_overrides(source_prompt=prompt_for(sample.person))
        edits.append(settings)
    results = make_surrogates(backend, [s.image for s in samples], edits, cfg.twin, theta=config.theta,
                              min_size=cfg.min_size, twin_from=cfg.twin_from,
                              batch_size=cfg.batch_size, progress=True)
    return np.stack([r.image for r in results]), np.stack([r.mask for r in results])


def _phantom_samples(config: DataConfig) -> list[_Sample]:
    """This node's phantom patients."""
    cases = plan_cohort(config.images_per_client * config.num_partitions, config.num_partitions,
                        seed=config.seed, non_iid=config.non_iid)
    mine = [render_case(c, config.image_size) for c in cases if c.hospital == config.partition_id]
    return [_Sample(p.image, p.healthy, p.mask, p.identity) for p in mine]


def _folder_samples(config: DataConfig) -> list[_Sample]:
    """``data_dir/images`` with ``healthy/`` twins and optional ``masks/``, matched by name
    (no identity: nothing is known of a photographed patient)."""
    root = Path(config.data_dir)
    masks = root / "masks"
    triples, _ = triples_from_folders(root / "images", root / "healthy",
                                      masks if masks.is_dir() else None)
    size = (config.image_size, config.image_size)

    def fit(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    samples = []
    for t in triples:
        truth = None if t.reference is None else cv2.resize(
            read_mask(t.reference).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        samples.append(_Sample(fit(read_image(t.pathological)), fit(read_image(t.healthy)), truth, None))
    return samples
