"""A site's differential privacy: the ``dp`` modes, checked, and the ClientApp mod that
applies them (docs/update_leakage.md).

``off``      no differential privacy (default).
``central``  Flower's server-side fixed clipping: the server clips each update and adds
             noise to their average. It has seen every update first: this protects the
             model's users from the sites' data, not a site from the server.
``client``   the ClientApp clips its own update (Flower's ``fixedclipping_mod``); the server
             adds the noise to the average. The server still sees each clipped update.
``local``    the ClientApp clips and adds the noise itself (Flower's ``LocalDpMod``):
             nothing leaves a site un-noised, the only mode that protects a site from the
             server.

Every mode but ``off`` trains a GroupNorm U-Net (``DpConfig.norm``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flwr.app import Context, Message

__all__ = ["DP_MODES", "DpConfig", "local_noise_multiplier", "dp_mod"]

DP_MODES = ("off", "central", "client", "local")


@dataclass(frozen=True)
class DpConfig:
    """The run's differential privacy (run-config keys ``dp``, ``dp-noise``,
    ``dp-clipping-norm``, ``dp-epsilon``, ``dp-delta``), checked on creation.

    >>> DpConfig("local", noise=0.0, clipping_norm=10.0, epsilon=1.0, delta=1e-5).norm
    'group'
    >>> DpConfig("off", noise=0.1, clipping_norm=10.0, epsilon=1.0, delta=1e-5)
    Traceback (most recent call last):
    ...
    ValueError: dp-noise > 0 but dp = 'off': choose dp = 'central' (server-side, ...), 'client' or 'local'
    """

    mode: str
    noise: float  # central, client: noise std / clipping norm
    clipping_norm: float
    epsilon: float  # local: each round's epsilon
    delta: float  # local: each round's delta; all modes: the delta epsilon is spent at

    def __post_init__(self):
        if self.mode not in DP_MODES:
            raise ValueError(f"dp must be one of {DP_MODES}, not {self.mode!r}")
        if self.mode == "off" and self.noise > 0:
            raise ValueError("dp-noise > 0 but dp = 'off': choose dp = 'central' (server-side, what "
                             "dp-noise alone meant before), 'client' or 'local'")
        if self.mode in ("central", "client") and self.noise <= 0:
            raise ValueError(f"dp = {self.mode!r} needs dp-noise > 0 (the noise multiplier)")
        if self.mode == "local":
            local_noise_multiplier(self.epsilon, self.delta)  # checks them

    @property
    def norm(self) -> str:
        """The U-Net's normalisation: BatchNorm's running statistics are averages over a
        site's photos that leave outside any clipped update, so DP needs GroupNorm."""
        return "batch" if self.mode == "off" else "group"


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

    from deid_client.task.settings import run_settings

    dp = run_settings(context.run_config).dp
    if dp.mode == "client":
        return fixedclipping_mod(msg, context, call_next)
    if dp.mode == "local":
        local = LocalDpMod(dp.clipping_norm, dp.clipping_norm, dp.epsilon, dp.delta)
        return local(msg, context, call_next)
    return call_next(msg, context)
