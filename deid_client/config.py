"""Typed views of the Hydra configs in ``conf/``: a model choice and FlowEdit settings."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .backends import EditSettings
from .surrogates import TwinFrom, check_twin_from

__all__ = ["ModelConfig", "SurrogateConfig", "CONFIG_DIR", "compose_edit", "compose_surrogate",
           "edit_config"]

#: The repository's ``conf/`` folder (``$DEID_CONFIG_DIR`` overrides it).
CONFIG_DIR = Path(os.environ.get("DEID_CONFIG_DIR", Path(__file__).resolve().parent.parent / "conf"))


@dataclass(frozen=True)
class ModelConfig:
    """Which pipeline to load and how (see ``deid_client.backends.load_backend``)."""

    id: str
    device: str | None = None
    dtype: str | None = None
    cpu_offload: bool = False
    allow_download: bool = False
    max_sequence_length: int = 256

    def load(self):
        from .backends import load_backend

        return load_backend(self.id, device=self.device, dtype=self.dtype,
                            cpu_offload=self.cpu_offload, allow_download=self.allow_download,
                            max_sequence_length=self.max_sequence_length)


@dataclass(frozen=True)
class SurrogateConfig:
    """The firewall stage (``conf/surrogate.yaml``): model, identity edit, twin edit, mask."""

    model: ModelConfig
    identity: EditSettings
    twin: EditSettings
    theta: float
    min_size: int = 0
    twin_from: TwinFrom = "patient"  # what the twin edit heals: "patient" or "surrogate"
    min_change: int = 3  # phantom surrogate vs patient: skin-type steps + 1 for the sex class
    batch_size: int | None = None  # photos per model call; None: what the device takes


def edit_config(cfg: DictConfig) -> tuple[ModelConfig, EditSettings]:
    """Validate a composed config (``model`` + ``flowedit``) into typed settings.

    Unknown or missing keys and wrong types are errors, not silent defaults.
    """
    return _typed(ModelConfig, cfg.model, "model"), _typed(EditSettings, cfg.flowedit, "flowedit")


def compose_edit(overrides: list[str] | None = None,
                 config_dir: str | os.PathLike = CONFIG_DIR) -> tuple[ModelConfig, EditSettings]:
    """Compose ``conf/edit.yaml`` with Hydra overrides, outside any Hydra app."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        return edit_config(compose("edit", overrides=list(overrides or [])))


def compose_surrogate(overrides: list[str] | None = None,
                      config_dir: str | os.PathLike = CONFIG_DIR) -> SurrogateConfig:
    """Compose ``conf/surrogate.yaml`` with Hydra overrides (e.g. ``["identity.n_max=22"]``)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        cfg = compose("surrogate", overrides=list(overrides or []))
    extra = set(cfg) - {"model", "identity", "twin", "theta", "min_size", "twin_from",
                         "min_change", "batch_size"}
    if extra:
        raise ValueError(f"config 'surrogate': unknown keys {sorted(extra)}")
    return SurrogateConfig(_typed(ModelConfig, cfg.model, "model"),
                           _typed(EditSettings, cfg.identity, "identity"),
                           _typed(EditSettings, cfg.twin, "twin"),
                           theta=float(cfg.theta), min_size=int(cfg.min_size),
                           twin_from=check_twin_from(str(cfg.twin_from)),
                           min_change=int(cfg.min_change),
                           batch_size=_batch_size(cfg.get("batch_size")))


def _batch_size(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"config 'surrogate': batch_size must be a whole number >= 1 or null, "
                         f"not {value!r}")
    return value


def _typed(cls, node, name: str):
    # "???" is OmegaConf's 'missing' marker: required keys must come from the config.
    required = {f.name: "???" for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
    schema = OmegaConf.structured(cls(**required))
    try:
        values = OmegaConf.to_container(OmegaConf.merge(schema, node), throw_on_missing=True)
    except Exception as exc:  # omegaconf raises its own validation errors
        raise ValueError(f"config '{name}': {str(exc).splitlines()[0]}") from None
    return cls(**values)
