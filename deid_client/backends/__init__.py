"""FlowEdit model backends and their loader.

``load_backend("stabilityai/stable-diffusion-3.5-medium")`` or
``load_backend("/models/flux1-dev")`` gives a backend whose ``edit`` runs
FlowEdit; it never downloads unless ``allow_download=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .base import DiffusersBackend, EditSettings, working_size
from .flux import FluxBackend
from .sd3 import SD3Backend

__all__ = ["load_backend", "backend_for", "ModelNotFoundError", "DiffusersBackend", "EditSettings",
           "SD3Backend", "FluxBackend", "working_size", "DTYPES"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelNotFoundError(ValueError):
    """Model weights are not on this machine; the message says how to get them."""


def load_backend(
    model: str | os.PathLike,
    *,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    cpu_offload: bool = False,
    allow_download: bool = False,
    max_sequence_length: int = 256,
) -> DiffusersBackend:
    """Load a diffusers pipeline from a folder or the Hugging Face cache, offline by default."""
    from diffusers import DiffusionPipeline

    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    if isinstance(dtype, str) and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    name = str(model)
    local = Path(name).expanduser()
    if local.exists() and not (local / "model_index.json").is_file():
        raise ModelNotFoundError(f"{local}: not a diffusers pipeline folder (no model_index.json)")
    if not local.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise ModelNotFoundError(f"{local}: no such model folder")
    try:
        pipe = DiffusionPipeline.from_pretrained(
            local if local.exists() else name, local_files_only=not allow_download,
            torch_dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        if local.exists():
            raise ModelNotFoundError(f"{local}: cannot load pipeline ({_first_line(exc)})") from None
        raise ModelNotFoundError(
            f"model {name!r} is not on this machine (Hugging Face cache: "
            f"{os.environ.get('HF_HOME', '~/.cache/huggingface')}); fetch it once with "
            f"`hf download {name}` (accept its licence on the Hub first), or pass a local folder"
        ) from None
    return backend_for(pipe, device=device, dtype=torch_dtype, cpu_offload=cpu_offload,
                       max_sequence_length=max_sequence_length)


def backend_for(pipe, **kwargs) -> DiffusersBackend:
    """Wrap an already loaded pipeline in the backend of its family."""
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    for pipeline_class, backend_class in ((StableDiffusion3Pipeline, SD3Backend),
                                          (FluxPipeline, FluxBackend)):
        if isinstance(pipe, pipeline_class):
            return backend_class(pipe, **kwargs)
    raise ValueError(f"{type(pipe).__name__} is not supported: use an SD3/SD3.5 or FLUX.1 pipeline")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
