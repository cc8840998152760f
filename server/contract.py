"""The message contract, enforced where replies arrive: arrays of the model and scalars only."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import ArrayRecord, Message, MetricRecord

__all__ = ["ALLOWED_METRICS", "reply_violations", "ContractGuard"]

log = logging.getLogger(__name__)

#: Scalar metrics a ClientApp may report.
ALLOWED_METRICS = frozenset({"num-examples", "train_loss", "eval_loss", "eval_dice", "eval_iou",
                             "time_data_s", "time_train_s"})


def reply_violations(msg: Message, expected: dict[str, tuple[int, ...]] | None) -> list[str]:
    """What in a client reply breaks the contract ([] if nothing).

    Allowed: one ``ArrayRecord`` named ``arrays`` whose arrays have exactly the
    global model's names and shapes (``expected``; None: no arrays allowed),
    and one ``MetricRecord`` named ``metrics`` with whitelisted scalar keys.
    Anything else (configs, strings, extra or image-shaped arrays) is refused.
    """
    if msg.has_error():
        return []  # errors carry no content; the strategy already skips them
    problems = []
    for name, record in msg.content.items():
        if name == "arrays" and isinstance(record, ArrayRecord) and expected is not None:
            shapes = {key: tuple(array.shape) for key, array in record.items()}
            if shapes != expected:
                extra = sorted(set(shapes) - set(expected))
                wrong = sorted(k for k in set(shapes) & set(expected) if shapes[k] != expected[k])
                problems.append(f"arrays differ from the model (unexpected {extra[:3]}, "
                                f"wrong shape {wrong[:3]}, missing {len(set(expected) - set(shapes))})")
        elif name == "metrics" and isinstance(record, MetricRecord):
            for key, value in record.items():
                if key not in ALLOWED_METRICS:
                    problems.append(f"metric {key!r} is not whitelisted")
                elif isinstance(value, list) or isinstance(value, bool):
                    problems.append(f"metric {key!r} is not a scalar")
        else:
            problems.append(f"record {name!r} ({type(record).__name__}) is not allowed")
    return problems


class ContractGuard:
    """Strategy mixin: drop (and count) client replies that break the contract."""

    violations: list[str]
    screened: int = 0

    def _screen(self, replies: Iterable[Message], expected) -> list[Message]:
        kept = []
        for reply in replies:
            self.screened += 1
            problems = reply_violations(reply, expected)
            if problems:
                node = reply.metadata.src_node_id
                self.violations.extend(f"node {node}: {p}" for p in problems)
                log.warning("dropped reply from node %s: %s", node, "; ".join(problems))
            else:
                kept.append(reply)
        return kept

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        return super().aggregate_train(server_round, self._screen(replies, self.model_shapes))

    def aggregate_evaluate(self, server_round, replies):
        return super().aggregate_evaluate(server_round, self._screen(list(replies), None))
