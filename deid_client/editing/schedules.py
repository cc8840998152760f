"""FlowEdit schedules taken from the models' own diffusers schedulers.

SD3 uses the scheduler's shifted sigmas (shift 3.0 in its config); FLUX uses
``linspace(1, 1/T, T)`` shifted with ``mu`` from the packed image sequence
length. Both start at t = 1 and end with 0.0.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

__all__ = ["sd3_sigmas", "flux_sigmas", "flux_mu"]


def sd3_sigmas(num_steps: int, scheduler: FlowMatchEulerDiscreteScheduler | None = None) -> torch.Tensor:
    """The T + 1 sigmas SD3 samples with (default: shift 3.0, as SD3's config)."""
    scheduler = _fresh(scheduler) if scheduler is not None else FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(num_steps)
    return scheduler.sigmas.clone()


def flux_mu(image_seq_len: int, scheduler: FlowMatchEulerDiscreteScheduler | None = None) -> float:
    """Resolution-dependent shift ``mu`` from the scheduler config (FLUX defaults)."""
    config = scheduler.config if scheduler is not None else {}
    return float(calculate_shift(
        image_seq_len,
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", 1.15),
    ))


def flux_sigmas(
    num_steps: int, image_seq_len: int, scheduler: FlowMatchEulerDiscreteScheduler | None = None
) -> torch.Tensor:
    """The T + 1 sigmas FLUX samples with for a packed sequence of ``image_seq_len`` tokens."""
    if scheduler is None:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    scheduler = _fresh(scheduler)
    base = np.linspace(1.0, 1.0 / num_steps, num_steps)
    scheduler.set_timesteps(sigmas=base, mu=flux_mu(image_seq_len, scheduler))
    return scheduler.sigmas.clone()


def _fresh(scheduler: FlowMatchEulerDiscreteScheduler) -> FlowMatchEulerDiscreteScheduler:
    # set_timesteps mutates; never disturb a pipeline's own scheduler.
    return copy.deepcopy(scheduler)
