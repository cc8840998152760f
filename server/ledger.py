"""The privacy a run has spent under the run config's ``dp`` mode
(``deid_client.task.dp``): (epsilon, delta) per site over the rounds so far, from
Flower's RDP accountant (``flwr.supercore.privacy_accounting``, on Google's
``dp-accounting``), written to ``history.json`` after every round (docs/update_leakage.md).
"""

from __future__ import annotations

__all__ = ["PrivacyLedger"]


class PrivacyLedger:
    """Composes one Gaussian release per successful round and says what is spent.

    ``noise_multiplier``: the noise's standard deviation over the clipping norm on one
    site's contribution. Under FedAvg's weights a site with weight ``w`` moves the average
    by up to ``w`` x the clipping norm, so a round with ``n`` replies and largest weight
    ``w`` releases with multiplier ``noise_multiplier / (n * w)`` (``noise_multiplier``
    itself when weights are equal; ``local`` noise is per site, weights do not matter).
    """

    def __init__(self, mode: str, noise_multiplier: float, delta: float):
        from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
        from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

        self.mode, self.noise_multiplier, self.delta = mode, noise_multiplier, delta
        self.accountant = RdpAccountant(PrivacyConfig(
            target_delta=delta, population_size=1,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION))

    def release(self, weights: list[float]) -> float:
        """One round's aggregate left the server (``weights``: the replies' num-examples);
        returns the noise multiplier composed."""
        multiplier = self.noise_multiplier
        if self.mode != "local":
            multiplier /= len(weights) * max(weights) / sum(weights)
        self.compose(multiplier)
        return multiplier

    def compose(self, multiplier: float) -> None:
        """One release with this noise multiplier (also: a resumed run's earlier rounds)."""
        from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

        self.accountant.compose(GaussianPrivacyEvent(noise_multiplier=multiplier, sample_size=1,
                                                     population_size=1))

    def spent(self) -> dict[str, float]:
        """``dp_epsilon`` and ``dp_delta`` spent so far (epsilon 0 before any release)."""
        if self.accountant.num_releases == 0:
            return {"dp_epsilon": 0.0, "dp_delta": self.delta}
        spent = self.accountant.get_privacy_spent()
        return {"dp_epsilon": float(spent.epsilon), "dp_delta": float(spent.delta)}
