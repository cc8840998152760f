"""Strategies by name: FedAvg (default), FedProx, and Flower's differential-privacy wrappers."""

from __future__ import annotations

from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedProx,
    Result,
    Strategy,
)

from .contract import ContractGuard
from .rounds import RoundKeeper

__all__ = ["make_strategy", "STRATEGIES"]

STRATEGIES = ("fedavg", "fedprox")


class GuardedFedAvg(ContractGuard, RoundKeeper, FedAvg):
    pass


class GuardedFedProx(ContractGuard, RoundKeeper, FedProx):
    pass


class GuardedDPFixedClipping(ContractGuard, RoundKeeper, DifferentialPrivacyServerSideFixedClipping):
    """The guard must screen replies before DP clipping touches their arrays."""


def make_strategy(
    name: str,
    *,
    model_shapes: dict[str, tuple[int, ...]],
    min_nodes: int = 2,
    fraction_train: float = 1.0,
    proximal_mu: float = 0.01,
    dp_noise_multiplier: float = 0.0,
    dp_clipping_norm: float = 10.0,
    max_failed_rounds: int = 2,
) -> Strategy:
    """A strategy whose outermost layer is the privacy guard, then the round keeper
    (``server.rounds``: a round with fewer than ``min_nodes`` good replies keeps the
    model; ``max_failed_rounds`` of them stop the run); ``dp_noise_multiplier > 0``
    adds Flower's server-side fixed-clipping differential privacy around FedAvg/FedProx."""
    common = dict(fraction_train=fraction_train, min_train_nodes=min_nodes,
                  min_evaluate_nodes=min_nodes, min_available_nodes=min_nodes)
    dp = dp_noise_multiplier > 0
    if name == "fedavg":
        strategy = (FedAvg if dp else GuardedFedAvg)(**common)
    elif name == "fedprox":
        strategy = (FedProx if dp else GuardedFedProx)(proximal_mu=proximal_mu, **common)
    else:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {name!r}")
    if dp:
        strategy = GuardedDPFixedClipping(
            strategy, noise_multiplier=dp_noise_multiplier, clipping_norm=dp_clipping_norm,
            num_sampled_clients=min_nodes)
    strategy.model_shapes = model_shapes
    strategy.violations = []
    strategy.min_replies, strategy.max_failed_rounds = min_nodes, max_failed_rounds
    strategy.failed_rounds, strategy.eval_errors, strategy.progress = [], {}, Result()
    return strategy
