"""A node's local training data: where it comes from, its training masks, its cache.

A node is a hospital folder (``data_dir/images/``, optionally ``masks/`` and
``healthy/``) or a phantom partition. Training masks come from a *mask source*:

* ``surrogate`` (the default, the product): the firewall (``deid_client.firewall``,
  settings from the package's ``conf/firewall.yaml``): every training photo is
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

import dataclasses
import hashlib
import io
import json
import logging
import os
import shlex
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from deid_client.firewall.masks import differential_mask, naive_mask
from deid_client.io.files import USER_ERRORS
from deid_client.io.images import atomic_write_bytes, read_image, read_mask, resize
from deid_client.io.images import list_images

__all__ = ["MASK_SOURCES", "NODE_MODEL_KEYS", "DataConfig", "NodeData", "data_config", "load_node_data",
           "training_mask", "default_cache_dir", "phantom_partition"]

log = logging.getLogger(__name__)

MASK_SOURCES = ("surrogate", "oracle", "naive", "truth")
#: Node-config keys that choose the firewall's model on this site (each -> a firewall override).
NODE_MODEL_KEYS = {"model": "model.id", "device": "model.device", "dtype": "model.dtype",
                   "cpu-offload": "model.cpu_offload"}


@dataclass(frozen=True)
class DataConfig:
    """Everything that decides a node's data (and so its cache key).

    The first fields are run-config keys under their snake_case names (``image_size`` is
    ``image-size``: :func:`data_config` maps them by that rule); their defaults live in the
    run config alone (``pyproject.toml``). The rest are the node's: its partition or folder.
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
        if self.mask_source not in MASK_SOURCES:
            raise ValueError(f"mask-source must be one of {MASK_SOURCES}, not {self.mask_source!r}")
        if not 0 <= self.partition_id < self.num_partitions:
            raise ValueError(f"partition-id {self.partition_id} outside 0..{self.num_partitions - 1}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError("eval-fraction must be between 0 and 1")

    def firewall_settings(self):
        """The firewall's settings for this node (``deid_client.firewall.compose_firewall``)."""
        from deid_client.firewall.config import compose_firewall

        return compose_firewall(list(self.firewall), self.firewall_config or None)

    def key(self) -> str:
        """Cache key: the settings (with the firewall's: all of them for ``surrogate``,
        θ for ``oracle``) and, for a folder, every file's name, size and mtime (a site
        that adds or replaces photos, or changes the firewall, must not train on a stale
        cache)."""
        from deid_client.firewall.config import settings_record

        settings = asdict(self)
        del settings["firewall"], settings["firewall_config"]  # their effect is below
        if self.mask_source == "surrogate":
            settings["surrogate"] = settings_record(self.firewall_settings())
        elif self.mask_source == "oracle":
            settings["theta"] = self.firewall_settings().theta
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
        if self.data_dir:
            root = Path(self.data_dir)
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                stat = path.stat()
                digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]


def data_config(run: dict, node: dict) -> DataConfig:
    """A node's data settings: federation-wide ones from the run config (each field's
    kebab-case name), site ones (where its photos are, its model and device) from the
    node config.

    >>> run = {"images-per-client": 8, "image-size": 64, "mask-source": "naive", "non-iid": 0.5,
    ...        "eval-fraction": 0.25, "seed": 0, "firewall": "theta=4.0"}
    >>> data_config(run, {"partition-id": 1, "num-partitions": 2, "device": "cpu"}).firewall
    ('theta=4.0', 'model.device=cpu')
    """
    firewall = shlex.split(str(run.get("firewall", "")))
    firewall += [f"{override}={_value(node[key])}" for key, override in NODE_MODEL_KEYS.items()
                 if key in node and node[key] != ""]
    types = {"int": int, "float": float, "str": str}
    shared = {f.name: types[f.type](run[f.name.replace("_", "-")])
              for f in dataclasses.fields(DataConfig) if not f.metadata.get("node")}
    return DataConfig(**shared, partition_id=int(node.get("partition-id", 0)),
                      num_partitions=int(node.get("num-partitions", 1)),
                      data_dir=str(node.get("data-dir", "")), firewall=tuple(firewall),
                      firewall_config=str(node.get("firewall-config", "")))


def _value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass
class NodeData:
    train_images: np.ndarray  # uint8 N x S x S x 3
    train_masks: np.ndarray  # bool N x S x S, from the mask source
    eval_images: np.ndarray  # the site's own photos, held out (none without reference masks)
    eval_masks: np.ndarray  # bool, reference masks


def training_mask(image: np.ndarray, twin: np.ndarray | None, truth: np.ndarray | None,
                  source: str, theta: float) -> np.ndarray:
    """The mask a site trains on, from a research mask source (not ``surrogate``)."""
    if source == "oracle":
        if twin is None:
            raise ValueError("mask-source 'oracle' needs a healthy twin for every image "
                             "(data-dir/healthy/); the firewall (mask-source 'surrogate') does not")
        return differential_mask(image, twin, theta)
    if source == "naive":
        return naive_mask(image)
    if truth is None:
        raise ValueError("mask-source 'truth' needs reference masks (data-dir/masks/)")
    return truth


def default_cache_dir() -> Path:
    """``$DEID_CACHE_DIR``, else ``~/.cache/deid-client`` (a node config's cache-dir wins)."""
    return Path(os.environ.get("DEID_CACHE_DIR") or Path.home() / ".cache" / "deid-client")


def load_node_data(config: DataConfig, cache_dir: str | os.PathLike | None = None) -> NodeData:
    """The node's data, prepared once and cached in ``cache_dir`` (``None``: not cached).

    With the firewall (``surrogate``) the training pairs are the firewall's own output
    folder, ``firewall-<key>/`` (resumable, read back from its PNGs); the held-out split
    and the released names are in ``node-data-<key>.npz``. A research mask source has its
    training arrays in that file too (they are not the firewall's).
    """
    key = config.key()
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


class _Sample(NamedTuple):
    image: np.ndarray  # uint8 RGB photo
    twin: np.ndarray | None  # its healthy twin, where there is one
    truth: np.ndarray | None  # its reference lesion mask, where there is one
    attributes: dict | None  # what is known of the patient (phantoms; a site's attributes.csv)


def _prepare(config: DataConfig, firewall_dir: Path) -> tuple[NodeData, list[str] | None]:
    """The node's data, and the pseudonyms of the firewall's released photos (None for
    a research mask source)."""
    samples = _folder_samples(config) if config.data_dir else phantom_partition(config)
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
    if config.mask_source == "surrogate":
        released = _through_firewall(train, config, firewall_dir)
        train_images, train_masks = _firewall_pairs(firewall_dir, released)
    else:
        theta = config.firewall_settings().theta
        train_images = np.stack([s.image for s in train])
        train_masks = np.stack([training_mask(s.image, s.twin, s.truth, config.mask_source, theta)
                                for s in train])
    size = (0, config.image_size, config.image_size)
    return NodeData(
        train_images=train_images,
        train_masks=train_masks,
        eval_images=np.stack([s.image for s in held_out]) if held_out else np.zeros(size + (3,), np.uint8),
        eval_masks=np.stack([s.truth for s in held_out]) if held_out else np.zeros(size, bool),
    ), released


def _through_firewall(samples: list[_Sample], config: DataConfig, firewall_dir: Path) -> list[str]:
    """The training photos through the firewall's folder batch into ``firewall_dir``; the
    released photos' names, in order."""
    from deid_client.firewall import Firewall, Photo, run_folder

    cfg = config.firewall_settings()
    photos = [Photo(lambda s=s: s.image, f"photo {i}", s.attributes) for i, s in enumerate(samples)]
    report = run_folder(Firewall(cfg, cfg.model.load()), photos, firewall_dir, progress=True)
    for label, error in report.errors:
        log.warning("firewall skipped %s: %s", label, error)
    if not report.released:
        raise ValueError("no photo made it through the firewall")
    return report.released


def _firewall_pairs(firewall_dir: Path, names) -> tuple[np.ndarray, np.ndarray]:
    """The firewall's released surrogates and masks, read from its output folder."""
    from deid_client.firewall.folder import read_outputs

    return read_outputs(firewall_dir, names, "surrogates"), read_outputs(firewall_dir, names, "masks")


def phantom_partition(config: DataConfig) -> list[_Sample]:
    """This node's phantom patients: photo, exact twin, exact mask, attributes."""
    from deid_client.phantom import plan_cohort, render_case
    from deid_client.phantom_flow.captions import attributes_of

    cases = plan_cohort(config.images_per_client * config.num_partitions, config.num_partitions,
                        seed=config.seed, non_iid=config.non_iid)
    mine = [render_case(c, config.image_size) for c in cases if c.hospital == config.partition_id]
    return [_Sample(p.image, p.twin, p.mask, attributes_of(p.identity)) for p in mine]


def _folder_samples(config: DataConfig) -> list[_Sample]:
    """``data_dir/images/`` (through :func:`deid_client.firewall.folder_photos`), with
    ``masks/`` and ``healthy/`` matched by file stem where they exist. Unreadable files
    are skipped with one warning each: the node goes on with the rest."""
    from deid_client.firewall.folder import folder_photos, not_photos

    root = Path(config.data_dir)
    if not root.is_dir():
        raise ValueError(f"data-dir {root}: not a folder")
    others = not_photos(root)
    if others:
        log.warning("%d files in %s not taken as photos (%s)", sum(others.values()), root,
                    ", ".join(f"{n} {s}" for s, n in sorted(others.items())))
    side = config.image_size
    found = {name: {p.stem: p for p in list_images(root / name)} if (root / name).is_dir() else {}
             for name in ("masks", "healthy")}
    samples = []
    for photo in folder_photos(root, size=side):
        stem = Path(photo.label).stem
        try:
            image = photo.load()
            mask = found["masks"].get(stem)
            twin = found["healthy"].get(stem)
            truth = None if mask is None else resize(read_mask(mask), (side, side), method="nearest")
            twin = None if twin is None else resize(read_image(twin), (side, side))
        except USER_ERRORS as exc:
            log.warning("skipped %s", exc)
            continue
        samples.append(_Sample(image, twin, truth, photo.attributes))
    return samples
