"""Strategies by name: FedAvg (default), FedProx, and Flower's differential-privacy
wrappers by the run config's ``dp`` mode (``deid_client.task.dp``)."""

from __future__ import annotations

from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedProx,
    Result,
    Strategy,
)

from deid_client.task.dp import DpConfig, local_noise_multiplier

from .contract import ContractGuard
from .ledger import PrivacyLedger
from .rounds import RoundKeeper

__all__ = ["make_strategy", "STRATEGIES"]

STRATEGIES = ("fedavg", "fedprox")


class DpLedger:
    """Strategy mixin: the privacy spent, composed for each round whose aggregate is released
    (inside the round keeper: a failed round releases nothing)."""

    ledger: PrivacyLedger | None = None
    # round -> the release's noise multiplier, and dp_epsilon and dp_delta spent so far
    dp_spent: dict[int, dict[str, float]]

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None and self.ledger is not None:
            multiplier = self.ledger.release([float(r.content["metrics"]["num-examples"]) for r in replies])
            self.dp_spent[server_round] = {"dp_noise_multiplier": multiplier} | self.ledger.spent()
        return arrays, metrics


class GuardedFedAvg(ContractGuard, RoundKeeper, DpLedger, FedAvg):
    pass


class GuardedFedProx(ContractGuard, RoundKeeper, DpLedger, FedProx):
    pass


class GuardedDPFixedClipping(ContractGuard, RoundKeeper, DpLedger,
                             DifferentialPrivacyServerSideFixedClipping):
    """The guard must screen replies before DP clipping touches their arrays."""


class GuardedDPClientClipping(ContractGuard, RoundKeeper, DpLedger,
                              DifferentialPrivacyClientSideFixedClipping):
    """The guard screens the sites' clipped replies before the server's noise is added."""


def make_strategy(
    name: str,
    *,
    model_shapes: dict[str, tuple[int, ...]],
    min_nodes: int = 2,
    fraction_train: float = 1.0,
    proximal_mu: float = 0.0,
    dp: DpConfig | None = None,
    max_failed_rounds: int = 2,
) -> Strategy:
    """A strategy whose outermost layer is the privacy guard, then the round keeper
    (``server.rounds``: a round with fewer than ``min_nodes`` good replies keeps the
    model; ``max_failed_rounds`` of them stop the run), then the privacy ledger.
    ``dp`` (``deid_client.task.dp``; ``None``: off): ``central`` wraps FedAvg/FedProx in Flower's
    server-side fixed clipping, ``client`` in its client-side one (the ClientApp clips), both
    with noise multiplier ``dp.noise``; ``local`` noise is the ClientApp's (``dp.epsilon``,
    ``dp.delta`` per round). Any mode but ``off`` accounts at ``dp.delta``."""
    mode = "off" if dp is None else dp.mode
    common = dict(fraction_train=fraction_train, min_train_nodes=min_nodes,
                  min_evaluate_nodes=min_nodes, min_available_nodes=min_nodes)
    wrapped = mode in ("central", "client")
    if name == "fedavg":
        strategy = (FedAvg if wrapped else GuardedFedAvg)(**common)
    elif name == "fedprox":
        strategy = (FedProx if wrapped else GuardedFedProx)(proximal_mu=proximal_mu, **common)
    else:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {name!r}")
    if wrapped:
        wrapper = GuardedDPFixedClipping if mode == "central" else GuardedDPClientClipping
        strategy = wrapper(strategy, noise_multiplier=dp.noise, clipping_norm=dp.clipping_norm,
                           num_sampled_clients=min_nodes)
    if mode != "off":
        noise = local_noise_multiplier(dp.epsilon, dp.delta) if mode == "local" else dp.noise
        strategy.ledger = PrivacyLedger(mode, noise, dp.delta)
    strategy.dp_spent = {}
    strategy.model_shapes = model_shapes
    strategy.violations = []
    strategy.min_replies, strategy.max_failed_rounds = min_nodes, max_failed_rounds
    strategy.failed_rounds, strategy.eval_errors, strategy.progress = [], {}, Result()
    return strategy
