"""Rounds that fail: fewer successful replies than ``min-nodes`` keep the previous model.

Flower's strategies aggregate whatever arrives; a round in which every node failed
would then end with no model at all. Here such a round is recorded (with each
node's one-line error) and changes nothing; after ``max_failed_rounds`` of them the
run sends no more work and the ServerApp ends with an error.
"""

from __future__ import annotations

import logging

__all__ = ["RoundKeeper", "RunFailed"]

log = logging.getLogger(__name__)


class RunFailed(RuntimeError):
    """Too many rounds had fewer successful replies than the run needs."""


class RoundKeeper:
    """Strategy mixin (inside the privacy guard, so screened-out replies do not count)."""

    min_replies: int = 1
    max_failed_rounds: int = 2
    failed_rounds: list[dict]

    @property
    def stopped(self) -> bool:
        return len(self.failed_rounds) >= self.max_failed_rounds

    def configure_train(self, server_round, arrays, config, grid):
        return [] if self.stopped else super().configure_train(server_round, arrays, config, grid)

    def configure_evaluate(self, server_round, arrays, config, grid):
        return [] if self.stopped else super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        good = [r for r in replies if not r.has_error()]
        if self.stopped:
            return None, None
        if len(good) < self.min_replies:
            errors = [f"node {r.metadata.src_node_id}: {_first_line(r.error.reason)}"
                      for r in replies if r.has_error()]
            self.failed_rounds.append({"round": server_round, "replies": len(good), "errors": errors})
            log.error("round %d failed: %d of %d needed replies; the global model is kept. %s",
                      server_round, len(good), self.min_replies, "; ".join(errors))
            return None, None
        return super().aggregate_train(server_round, good)

    def aggregate_evaluate(self, server_round, replies):
        # a node without reference masks reports num-examples 0: no weight, no division by zero
        scored = [r for r in replies if not r.has_error()
                  and float(next(iter(r.content.metric_records.values()))["num-examples"]) > 0]
        return super().aggregate_evaluate(server_round, scored) if scored else None


def _first_line(text: str) -> str:
    return (str(text).strip().splitlines() or ["no reason given"])[-1][:300]
