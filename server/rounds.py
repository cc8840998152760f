"""Rounds that fail, and rounds that must not depend on who answered first.

Fewer successful replies than ``min-nodes`` keep the previous model.

Flower's strategies aggregate whatever arrives; a round in which every node failed
would then end with no model at all. Here such a round is recorded (with each
node's one-line error) and changes nothing; after ``max_failed_rounds`` of them the
run sends no more work and the ServerApp ends with an error.

Replies are aggregated in the order of their content's digest, not in the order they
arrived: floating-point sums depend on order, and a run must give the same model and
history bit for bit however the network or the simulation schedules its nodes.
"""

from __future__ import annotations

import hashlib
import logging

from flwr.serverapp.strategy import Result

__all__ = ["RoundKeeper", "RunFailed", "content_digest"]

log = logging.getLogger(__name__)


class RunFailed(RuntimeError):
    """Too many rounds had fewer successful replies than the run needs."""


class RoundKeeper:
    """Strategy mixin (inside the privacy guard, so screened-out replies do not count)."""

    min_replies: int = 1
    max_failed_rounds: int = 2
    # Flower hands its Result over only when the run ends; this one grows round by round, so
    # the history is written with each checkpoint and a killed run resumes with its rounds.
    progress: Result
    failed_rounds: list[dict]
    eval_errors: dict[int, list[str]]  # round -> each node's one-line evaluation error

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
            errors = [f"node {r.metadata.src_node_id}: {_exception_line(r.error.reason)}"
                      for r in replies if r.has_error()]
            self.failed_rounds.append({"round": server_round, "replies": len(good), "errors": errors})
            log.error("round %d failed: %d of %d needed replies; the global model is kept. %s",
                      server_round, len(good), self.min_replies, "; ".join(errors))
            return None, None
        arrays, metrics = super().aggregate_train(server_round, sorted(good, key=content_digest))
        if metrics is not None:
            self.progress.train_metrics_clientapp[server_round] = metrics
        return arrays, metrics

    def aggregate_evaluate(self, server_round, replies):
        replies = list(replies)
        errors = [f"node {r.metadata.src_node_id}: {_exception_line(r.error.reason)}"
                  for r in replies if r.has_error()]
        if errors:  # recorded, not silently left out of the round's score
            self.eval_errors[server_round] = errors
            log.error("round %d: %d nodes failed to evaluate. %s", server_round, len(errors),
                      "; ".join(errors))
        # a node without reference masks reports num-examples 0: no weight, no division by zero
        scored = [r for r in replies if not r.has_error()
                  and float(next(iter(r.content.metric_records.values()))["num-examples"]) > 0]
        if not scored:
            return None
        metrics = super().aggregate_evaluate(server_round, sorted(scored, key=content_digest))
        if metrics is not None:
            self.progress.evaluate_metrics_clientapp[server_round] = metrics
        return metrics


def content_digest(reply) -> str:
    """SHA-256 of a reply's arrays and metrics (names, shapes, dtypes, bytes, values):
    the same content gives the same digest on every run."""
    digest = hashlib.sha256()
    content = reply.content
    for name, record in sorted(content.array_records.items()):
        for key, array in sorted(record.items()):
            data = array.numpy()
            digest.update(f"{name}/{key}:{data.dtype}:{data.shape}".encode())
            digest.update(data.tobytes())
    for name, record in sorted(content.metric_records.items()):
        digest.update(repr((name, sorted(record.items()))).encode())
    return digest.hexdigest()


def _exception_line(text: str) -> str:
    """A ClientApp's error reason is a traceback: its last line names the exception."""
    return (str(text).strip().splitlines() or ["no reason given"])[-1][:300]
