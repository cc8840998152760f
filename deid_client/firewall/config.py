"""The firewall's settings: ``conf/firewall.yaml`` and its groups, composed with Hydra
into one typed :class:`FirewallConfig`.

The configs ship inside the package (``deid_client/firewall/conf``, read with
``importlib.resources``), so an installed wheel, a Docker image and a Flower app
all compose the same firewall. A site's own YAML file may override any of it.
``conf/`` is the one home of every firewall default, FlowEdit's published ones
included (``conf/flowedit/<model family>.yaml``, :func:`published_edit`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import importlib.util
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from deid_client.editing.backends import EditSettings, ModelConfig
from deid_client.firewall.gate import GateConfig
from deid_client.editing.prompts import PromptTemplate
from deid_client.io.files import first_line

__all__ = ["own_hydra", "FirewallConfig", "TwinFrom", "TWIN_FROM", "Lesion", "LESIONS", "config_dir",
           "compose_firewall", "published_edit", "settings_record", "ADDED_SETTINGS"]

#: What the twin edit heals (``deid_client.firewall.firewall``).
TwinFrom = Literal["patient", "surrogate"]
TWIN_FROM: tuple[str, ...] = get_args(TwinFrom)
#: Where the surrogate's lesion comes from.
Lesion = Literal["edited", "carried"]
LESIONS: tuple[str, ...] = get_args(Lesion)
_CONF = "conf"  # inside this package


@contextlib.contextmanager
def config_dir() -> Iterator[Path]:
    """The firewall's ``conf/`` folder as a real path (for Hydra), while in the ``with``."""
    with importlib.resources.as_file(importlib.resources.files(__package__) / _CONF) as path:
        yield Path(path)


@dataclass(frozen=True)
class FirewallConfig:
    """The whole firewall (``conf/firewall.yaml``): model, identity edit, twin edit, prompts,
    gate, mask threshold ``theta`` (a* units; :attr:`mask_theta` is the one the masks use)."""

    model: ModelConfig
    identity: EditSettings
    twin: EditSettings
    prompts: PromptTemplate
    gate: GateConfig
    theta: float
    min_size: int = 0
    twin_from: TwinFrom = "patient"  # what the twin edit heals: "patient" or "surrogate"
    lesion: Lesion = "edited"  # the surrogate's lesion: "edited" by the identity edit, or "carried"
    min_change: int = 0  # steps between a surrogate and its patient (0: drawn blind to the patient)
    surrogates_per_photo: int = 1  # K: surrogates per photo, each with its own target and noise
    lesion_gain: float = 1.0  # lesion="carried": the carried lesion's CIELAB difference times this
    batch_size: int | None = None  # photos per model call; None: what the device takes
    privacy: str = field(kw_only=True)  # the level whose settings these are (preset's privacy_levels)

    @property
    def mask_theta(self) -> float:
        """The surrogate's mask threshold against its twin: ``theta`` times ``lesion_gain``,
        so a carried lesion's mask is the patient's at ``theta`` whatever its gain."""
        return self.theta * self.lesion_gain

    def __post_init__(self):
        if self.twin_from not in TWIN_FROM:
            raise ValueError(f"twin_from must be one of {TWIN_FROM}, not {self.twin_from!r}")
        if self.lesion not in LESIONS:
            raise ValueError(f"lesion must be one of {LESIONS}, not {self.lesion!r}")
        if self.surrogates_per_photo < 1:
            raise ValueError(f"surrogates_per_photo must be at least 1, not {self.surrogates_per_photo}")
        if self.lesion_gain <= 0:
            raise ValueError(f"lesion_gain must be positive, not {self.lesion_gain}")
        if self.lesion_gain != 1.0 and self.lesion != "carried":
            raise ValueError("lesion_gain needs lesion=carried: only a carried lesion can be scaled "
                             "(with lesion=edited, set lesion_gain=1.0)")
        if self.lesion == "carried" and self.twin_from != "patient":
            raise ValueError("lesion=carried needs twin_from=patient: the lesion is carried from the heal")


#: Settings added after folders and caches were first made, with the value they had
#: before they existed: a cache's record leaves a setting out at that value, so those
#: folders and caches still resume.
ADDED_SETTINGS: dict[str, Any] = {"surrogates_per_photo": 1, "lesion_gain": 1.0}


def settings_record(cfg: FirewallConfig, *, complete: bool = False) -> dict:
    """Every setting that decides the firewall's outputs, as plain JSON values: for a
    manifest and a cache key, or with ``complete`` for people (a run's record), where an
    :data:`ADDED_SETTINGS` setting at its old value is kept too. ``batch_size`` decides
    speed only and stays out.

    >>> cfg = compose_firewall(["surrogates_per_photo=1"])
    >>> "surrogates_per_photo" in settings_record(cfg)
    False
    >>> settings_record(cfg, complete=True)["surrogates_per_photo"]
    1
    """
    record = {k: v for k, v in asdict(cfg).items() if k != "batch_size"}
    if not complete:
        record = {k: v for k, v in record.items() if k not in ADDED_SETTINGS or v != ADDED_SETTINGS[k]}
    return json.loads(json.dumps(record, default=str))


def published_edit(family: str, source_prompt: str, target_prompt: str, **overrides: Any) -> EditSettings:
    """A model family's published FlowEdit defaults (``conf/flowedit/<family>.yaml``; a
    backend's ``family``) between two prompts, with every non-None ``overrides`` applied.

    >>> published_edit("sd3", "a", "b").gamma_tgt, published_edit("flux", "a", "b", n_max=20).n_max
    (13.5, 20)
    """
    with config_dir() as folder:
        path = folder / "flowedit" / f"{family}.yaml"
        if not path.is_file():
            raise ValueError(f"no published FlowEdit defaults for model family {family!r}")
        defaults = OmegaConf.to_container(OmegaConf.load(path))
    defaults.pop("defaults", None)
    return _typed(EditSettings, defaults | {"source_prompt": source_prompt, "target_prompt": target_prompt},
                  "flowedit").with_overrides(**overrides)


def compose_firewall(overrides: Sequence[str] | None = None,
                     site_config: str | os.PathLike | None = None) -> FirewallConfig:
    """The firewall's settings: ``conf/firewall.yaml`` and its preset, then what the
    ``privacy`` level sets for that preset (``privacy_levels``), then a site's YAML file
    (``site_config``, any subset of its keys), then Hydra overrides
    (e.g. ``["identity.n_max=22", "preset=sd35_medium", "privacy=medium"]``).

    >>> compose_firewall(["theta=4.0"]).theta
    4.0
    >>> compose_firewall(["privacy=medium"]).lesion
    'carried'
    """
    cfg = _compose("firewall", overrides)
    site = _site_file(site_config) if site_config is not None else OmegaConf.create()
    given = _parse(overrides)
    # the level the command line names, else the site file's, else the default
    level = str(cfg.privacy if "privacy" in {o.key_or_group for o in given}
                else site.get("privacy", cfg.privacy))
    levels = cfg.get("privacy_levels") or {}
    if level not in levels:
        raise ValueError(f"privacy level {level!r} has no measured settings for this preset "
                         f"(it has: {', '.join(levels) or 'none'}; docs/privacy_attackers.md)")
    if levels[level] or site:
        # the level over the preset, the site over the level, the command line over both
        try:
            cfg = _override(OmegaConf.merge(cfg, levels[level], site), given)
        except OmegaConfBaseException as exc:  # e.g. a site file's unknown key
            raise ValueError(f"config 'firewall': {first_line(exc)}") from None
    required = {"model", "identity", "twin", "prompts", "gate", "theta", "min_size", "twin_from",
                "lesion", "lesion_gain", "min_change", "surrogates_per_photo", "privacy"}
    extra = set(cfg) - required - {"batch_size", "privacy_levels"}
    if extra:
        raise ValueError(f"config 'firewall': unknown keys {sorted(extra)}")
    missing = required - set(cfg)
    if missing:  # a '~key' override
        raise ValueError(f"config 'firewall': missing keys {sorted(missing)}")
    return FirewallConfig(_typed(ModelConfig, cfg.model, "model"),
                           _typed(EditSettings, cfg.identity, "identity"),
                           _typed(EditSettings, cfg.twin, "twin"),
                           _built(PromptTemplate, cfg.prompts, "prompts"),
                           _built(GateConfig, cfg.gate, "gate"),
                           theta=float(cfg.theta), min_size=int(cfg.min_size),
                           twin_from=str(cfg.twin_from), lesion=str(cfg.lesion),
                           min_change=int(cfg.min_change),
                           surrogates_per_photo=int(cfg.surrogates_per_photo),
                           lesion_gain=float(cfg.lesion_gain), privacy=level,
                           batch_size=_batch_size(cfg.get("batch_size")))


def _site_file(site_config: str | os.PathLike) -> DictConfig:
    path = Path(site_config)
    if not path.is_file():
        raise ValueError(f"{path}: no such firewall config file")
    try:
        return OmegaConf.load(path)
    except Exception as exc:  # YAML errors come in many types
        raise ValueError(f"{path}: not a YAML config ({str(exc).splitlines()[0]})") from None


def _parse(overrides: Sequence[str] | None) -> list:
    """Hydra's parse of ``overrides`` (already validated by ``compose``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides or []))


@functools.cache
def _groups() -> frozenset[str]:
    """The config groups of ``conf/`` (``preset``, ``model``, ...)."""
    with config_dir() as folder:
        return frozenset(p.name for p in folder.iterdir() if p.is_dir())


def _override(cfg: DictConfig, overrides: list) -> DictConfig:
    """Parsed ``overrides`` applied again on top of ``cfg``: the values, not the
    config-group choices (``preset=...``), which only ``compose`` makes."""
    cfg = cfg.copy()
    for override in overrides:
        key = override.key_or_group
        if key in _groups():
            continue
        if override.is_delete():
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            if isinstance(node, DictConfig):
                with open_dict(node):  # compose's struct flag forbids deleting, as '~' asks
                    node.pop(leaf, None)
        else:
            OmegaConf.update(cfg, key, override.value(), merge=False, force_add=True)
    return cfg


def _compose(name: str, overrides: Sequence[str] | None) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    searchpath = f"hydra.searchpath=['file://{_phantom_conf()}']"
    with own_hydra(), config_dir() as folder, initialize_config_dir(config_dir=str(folder),
                                                                     version_base="1.3"):
        try:
            return compose(name, overrides=[*(overrides or []), searchpath])
        except (HydraException, OmegaConfBaseException) as exc:  # a user's override
            raise ValueError(f"config '{name}': {str(exc).splitlines()[0]}") from None


def _phantom_conf() -> Path:
    """The phantom world's configs (its prompt language, ``prompts/phantom.yaml``), found
    without importing the phantom world: a site on a real model never loads it."""
    spec = importlib.util.find_spec("deid_client.phantom")
    return Path(spec.submodule_search_locations[0]) / "conf"


@contextlib.contextmanager
def own_hydra():
    """Hydra's compose API refuses to run inside a Hydra application (a research
    simulation that prepares its data in-process): set the application's Hydra aside
    while the firewall's config is composed, and put it back."""
    from hydra.core.global_hydra import GlobalHydra

    global_hydra = GlobalHydra.instance()
    running = global_hydra.hydra if global_hydra.is_initialized() else None
    global_hydra.clear()
    try:
        yield
    finally:
        global_hydra.clear()
        if running is not None:
            global_hydra.initialize(running)


def _built(cls, node, name: str):
    """``cls`` from a config node whose fields OmegaConf cannot type (Literal, nested
    containers); the class validates its own values."""
    try:
        return cls(**OmegaConf.to_container(node, resolve=True))
    except TypeError as exc:
        raise ValueError(f"config '{name}': {exc}") from None


def _batch_size(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"config 'firewall': batch_size must be a whole number >= 1 or null, "
                         f"not {value!r}")
    return value


def _typed(cls, node, name: str):
    # The schema comes from the class, not an instance: fields without a default are
    # OmegaConf's 'missing' and must come from the config, and no placeholder is validated.
    schema = OmegaConf.structured(cls)
    try:
        values = OmegaConf.to_container(OmegaConf.merge(schema, node), throw_on_missing=True)
    except Exception as exc:  # omegaconf raises its own validation errors
        raise ValueError(f"config '{name}': {str(exc).splitlines()[0]}") from None
    return cls(**values)
