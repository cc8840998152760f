"""FlowEdit: inversion-free editing with a rectified-flow model (docs/design.md, How it works).

The sampler knows nothing of any model: it takes velocity callables. Model
backends (SD3, FLUX, the phantom model) wrap their transformers into such
callables, with classifier-free or distilled guidance already applied.

Notation: ``z_t = (1 - t) x0 + t eps``; ``t = 1`` is pure noise; velocities
predict ``eps - x0``; Euler steps ``z <- z + (t_next - t) v`` go from 1 to 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

__all__ = ["flowedit", "Velocity", "VelocityPair", "check_schedule"]

#: v(z, t) -> velocity, guidance already applied.
Velocity = Callable[[torch.Tensor, float], torch.Tensor]
#: v_pair(z_src, z_tgt, t) -> (v_src, v_tgt): both sides in one (batched) call.
VelocityPair = Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]


def check_schedule(sigmas: Sequence[float] | torch.Tensor) -> list[float]:
    """Validate a descending flow-matching schedule t_0 > ... > t_T = 0; return floats."""
    values = [float(s) for s in (sigmas.tolist() if torch.is_tensor(sigmas) else sigmas)]
    if len(values) < 2:
        raise ValueError("a schedule needs at least two sigmas (T >= 1)")
    if values[-1] != 0.0:
        raise ValueError(f"the schedule must end at 0.0, not {values[-1]}")
    if not 0.0 < values[0] <= 1.0:
        raise ValueError(f"the schedule must start in (0, 1], not {values[0]}")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError("the schedule must be strictly descending")
    return values


@torch.no_grad()
def flowedit(
    x_src: torch.Tensor,
    v_src: Velocity,
    v_tgt: Velocity,
    sigmas: Sequence[float] | torch.Tensor,
    *,
    n_max: int,
    n_min: int = 0,
    n_avg: int = 1,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    v_pair: VelocityPair | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Edit the clean latent ``x_src`` from the source towards the target condition.

    Steps ``i`` with ``T - n_max <= i < T - n_min`` move the edit by the averaged
    difference of target and source velocities at coupled noisy points; fresh
    noise is drawn for every step and every averaging sample. With
    ``n_min > 0`` the last ``n_min`` steps are plain Euler sampling on the
    target, started from the edit noised to ``t_{T - n_min}`` (as in the
    authors' code). The edit state is kept in float32 whatever the model dtype.

    Parameters
    ----------
    x_src : Tensor
        Source latent (already shifted and scaled).
    v_src, v_tgt : callable (z, t) -> Tensor
        Guided velocities for the source and target conditions.
    sigmas : sequence of float
        Descending schedule ``t_0 > ... > t_T = 0`` (length T + 1), e.g. a
        diffusers flow-match scheduler's ``sigmas``.
    n_max, n_min, n_avg : int
        Editing window and number of noise samples averaged per step.
    generator : torch.Generator or sequence of them, optional
        Source of all noise: one generator per image (see :mod:`deid_client.editing.seeds`).
        With a sequence, row ``i`` of the batch draws its noise from ``generator[i]``
        alone, so an image's edit does not depend on what else is in its batch.
    v_pair : callable (z_src, z_tgt, t) -> (v_src, v_tgt), optional
        Evaluates both sides in one call (one batched transformer pass); used
        for the editing steps instead of two separate calls.
    progress : bool
        Show a progress bar over the steps.

    Returns
    -------
    Tensor
        The edited latent, in ``x_src``'s dtype.

    Examples
    --------
    >>> x = torch.randn(1, 4, 8, 8)
    >>> same = lambda z, t: z * t
    >>> bool((flowedit(x, same, same, [1.0, 0.5, 0.0], n_max=2) == x).all())
    True
    """
    schedule = check_schedule(sigmas)
    steps = len(schedule) - 1
    if not 0 <= n_min <= n_max <= steps:
        raise ValueError(f"need 0 <= n_min <= n_max <= T={steps}, got n_min={n_min}, n_max={n_max}")
    if n_avg < 1:
        raise ValueError(f"n_avg must be at least 1, not {n_avg}")
    if isinstance(generator, Sequence) and len(generator) != x_src.shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {x_src.shape[0]}")
    if v_pair is None:
        def v_pair(zs: torch.Tensor, zt: torch.Tensor, t: float):
            return v_src(zs, t), v_tgt(zt, t)

    dtype = x_src.dtype
    x = x_src.float()
    z_edit = x.clone()
    bar = tqdm(total=n_max, desc="FlowEdit", unit="step", disable=not progress, leave=False)
    for i in range(steps - n_max, steps - n_min):
        t, t_next = schedule[i], schedule[i + 1]
        velocity = torch.zeros_like(x)
        for _ in range(n_avg):
            z_src = (1 - t) * x + t * _noise(x, generator)
            # Z_tgt = Z_edit + Z_src - X_src, bracketed so that an unmoved edit gives Z_tgt == Z_src.
            z_tgt = z_src + (z_edit - x)
            vs, vt = v_pair(z_src.to(dtype), z_tgt.to(dtype), t)
            velocity += (vt.float() - vs.float()) / n_avg
        z_edit = z_edit + (t_next - t) * velocity
        bar.update()
    if n_min > 0:
        t = schedule[steps - n_min]
        z = z_edit + t * (_noise(x, generator) - x)  # = Z_edit + Z_src - X_src at t
        for i in range(steps - n_min, steps):
            z = z + (schedule[i + 1] - schedule[i]) * v_tgt(z.to(dtype), schedule[i]).float()
            bar.update()
        z_edit = z
    bar.close()
    return z_edit.to(dtype)


def _noise(like: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None
           ) -> torch.Tensor:
    if isinstance(generator, Sequence):  # one stream per row: a row's draw is the same in any batch
        return torch.cat([_noise(like[i:i + 1], g) for i, g in enumerate(generator)])
    device = generator.device if generator is not None else like.device
    noise = torch.randn(like.shape, generator=generator, device=device, dtype=torch.float32)
    return noise.to(like.device)
