"""A site's differential privacy: the run config's ``dp`` mode, checked, and the ClientApp
mod that applies it (docs/update_leakage.md).

``off``      no differential privacy (default).
``central``  Flower's server-side fixed clipping: the server clips each update and adds
             noise to their average. It has seen every update first: this protects the
             model's users from the sites' data, not a site from the server.
``client``   the ClientApp clips its own update (Flower's ``fixedclipping_mod``); the server
             adds the noise to the average. The server still sees each clipped update.
``local``    the ClientApp clips and adds the noise itself (Flower's ``LocalDpMod``):
             nothing leaves a site un-noised, the only mode that protects a site from the
             server.

Every mode but ``off`` trains a GroupNorm U-Net (``task.segmentation.unet_for``).
"""

from __future__ import annotations

import math

from flwr.app import Context, Message

__all__ = ["DP_MODES", "dp_mode", "local_noise_multiplier", "dp_mod"]

DP_MODES = ("off", "central", "client", "local")


def dp_mode(run_config: dict) -> str:
    """The run config's ``dp`` mode, checked against ``dp-noise``. A TOML or YAML ``off``
    may arrive as ``False``.

    >>> dp_mode({"dp": "local", "dp-noise": 0.0})
    'local'
    """
    mode = run_config.get("dp", "off")
    mode = "off" if mode is False else str(mode)
    if mode not in DP_MODES:
        raise ValueError(f"dp must be one of {DP_MODES}, not {mode!r}")
    noise = float(run_config.get("dp-noise", 0.0))
    if mode == "off" and noise > 0:
        raise ValueError("dp-noise > 0 but dp = 'off': choose dp = 'central' (server-side, what "
                         "dp-noise alone meant before), 'client' or 'local'")
    if mode in ("central", "client") and noise <= 0:
        raise ValueError(f"dp = {mode!r} needs dp-noise > 0 (the noise multiplier)")
    return mode


def local_noise_multiplier(epsilon: float, delta: float) -> float:
    """``LocalDpMod``'s noise standard deviation over its sensitivity for one round's
    (epsilon, delta): the classical Gaussian mechanism.

    >>> round(local_noise_multiplier(1.0, 1e-5), 3)
    4.845
    """
    if epsilon <= 0 or not 0 < delta < 1:
        raise ValueError("dp = 'local' needs dp-epsilon > 0 and 0 < dp-delta < 1")
    return math.sqrt(2 * math.log(1.25 / delta)) / epsilon


def dp_mod(msg: Message, context: Context, call_next) -> Message:
    """The ClientApp's train mod for the run's ``dp`` mode: Flower's ``fixedclipping_mod``
    (``client``), its ``LocalDpMod`` with sensitivity = the clipping norm (``local``), or
    nothing."""
    from flwr.clientapp.mod import LocalDpMod, fixedclipping_mod

    run = context.run_config
    mode = dp_mode(run)
    if mode == "client":
        return fixedclipping_mod(msg, context, call_next)
    if mode == "local":
        clip = float(run["dp-clipping-norm"])
        local_noise_multiplier(float(run["dp-epsilon"]), float(run["dp-delta"]))  # checks them
        local = LocalDpMod(clip, clip, float(run["dp-epsilon"]), float(run["dp-delta"]))
        return local(msg, context, call_next)
    return call_next(msg, context)
