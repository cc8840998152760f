"""FlowEdit model backends and their loader.

``load_backend(ModelConfig("stabilityai/stable-diffusion-3.5-medium"))``,
``load_backend(ModelConfig("/models/flux1-dev"))`` or ``load_backend(ModelConfig("phantom"))``
(the small model shipped in the package) gives a backend whose ``edit`` runs FlowEdit;
it never downloads unless ``allow_download=True``. The firewall's ``conf/model/`` files
are :class:`ModelConfig` s.

The phantom world (its renderer and its model) is imported only when the phantom
model is asked for: a site with SD3 or FLUX never loads it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from deid_client.editing.backends.base import DiffusersBackend, EditSettings, working_size
from deid_client.editing.backends.flux import FluxBackend
from deid_client.editing.backends.sd3 import SD3Backend
from deid_client.io.files import first_line

__all__ = ["ModelConfig", "load_backend", "backend_for", "ModelNotFoundError", "DiffusersBackend",
           "EditSettings", "SD3Backend", "FluxBackend", "PhantomBackend", "PHANTOM", "working_size", "DTYPES"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: The name that loads the phantom model shipped in the package.
PHANTOM = "phantom"
_PHANTOM_PIPELINE = "PhantomFlowPipeline"  # its class name, in model_index.json


class ModelNotFoundError(ValueError):
    """Model weights are not on this machine; the message says how to get them."""


@dataclass(frozen=True)
class ModelConfig:
    """Which pipeline to load and how: ``id`` is ``"phantom"`` (the model shipped in the
    package), a diffusers folder, or a Hugging Face id already in the local cache;
    ``device`` and ``dtype`` default to cuda / bfloat16 where there is a GPU."""

    id: str
    device: str | None = None
    dtype: str | None = None
    cpu_offload: bool = False
    allow_download: bool = False
    max_sequence_length: int = 256


def load_backend(config: ModelConfig) -> DiffusersBackend:
    """Load a diffusers pipeline from a folder or the Hugging Face cache, offline unless
    ``config.allow_download``.

    ``ModelConfig("phantom")`` loads the phantom rectified-flow model shipped in the package.
    """
    from diffusers import DiffusionPipeline

    dtype = config.dtype
    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    if isinstance(dtype, str) and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    name = str(config.id)
    if name == PHANTOM:
        from deid_client.phantom.model import WEIGHTS_ENV, phantom_weights_dir

        local = phantom_weights_dir()
    else:
        local = Path(name).expanduser()
    if name == PHANTOM and not list(local.glob("transformer/*.safetensors")):
        raise ModelNotFoundError(
            f"the phantom model's weights are missing from {local}; point ${WEIGHTS_ENV} to a "
            f"copy, or train them from a checkout with `python -m research.phantom_model.train "
            f"--out {local}` (about an hour on 2 CPU cores)")
    if local.exists() and not (local / "model_index.json").is_file():
        raise ModelNotFoundError(f"{local}: not a diffusers pipeline folder (no model_index.json)")
    if not local.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise ModelNotFoundError(f"{local}: no such model folder")
    pipeline_class = DiffusionPipeline
    if local.exists() and _pipeline_class_name(local) == _PHANTOM_PIPELINE:
        from deid_client.phantom.model import PhantomFlowPipeline

        pipeline_class = PhantomFlowPipeline  # our own class: diffusers cannot look it up by name
    try:
        pipe = pipeline_class.from_pretrained(
            local if local.exists() else name, local_files_only=not config.allow_download,
            dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        if local.exists():
            raise ModelNotFoundError(f"{local}: cannot load pipeline ({first_line(exc)})") from None
        raise ModelNotFoundError(
            f"model {name!r} is not on this machine (Hugging Face cache: "
            f"{os.environ.get('HF_HOME', '~/.cache/huggingface')}); fetch it once with "
            f"`hf download {name}` (accept its licence on the Hub first), or pass a local folder"
        ) from None
    return backend_for(pipe, device=config.device, dtype=torch_dtype, cpu_offload=config.cpu_offload,
                       max_sequence_length=config.max_sequence_length)


def backend_for(pipe, **kwargs) -> DiffusersBackend:
    """Wrap an already loaded pipeline in the backend of its family."""
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    if type(pipe).__name__ == _PHANTOM_PIPELINE:
        from deid_client.editing.backends.phantom import PhantomBackend

        return PhantomBackend(pipe, **kwargs)
    for pipeline_class, backend_class in ((StableDiffusion3Pipeline, SD3Backend),
                                          (FluxPipeline, FluxBackend)):
        if isinstance(pipe, pipeline_class):
            return backend_class(pipe, **kwargs)
    raise ValueError(f"{type(pipe).__name__} is not supported: use an SD3/SD3.5, FLUX.1 or phantom pipeline")


def _pipeline_class_name(folder: Path) -> str | None:
    try:
        return json.loads((folder / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError):
        return None


def __getattr__(name: str):
    if name == "PhantomBackend":  # the phantom world, imported on first use only
        from deid_client.editing.backends.phantom import PhantomBackend

        return PhantomBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
