"""Checkpoints every round, resume after a restart, history as JSON, CSV and a plot."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import torch
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import Result

from deid_client.io.images import atomic_write_bytes

__all__ = ["RunRecorder"]


class RunRecorder:
    """Files of one federated run, all under ``output_dir``.

    ``checkpoint.pt``  global model + the round it belongs to (rewritten every round)
    ``final_model.pt`` the global model after the last round
    ``history.json``   one entry per round: aggregated train and eval metrics
    ``history.csv``    the same as a table
    ``convergence.png`` global Dice / IoU and training loss over rounds
    """

    def __init__(self, output_dir: str | os.PathLike):
        self.root = Path(output_dir)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    def resume(self) -> tuple[int, dict[str, torch.Tensor]] | None:
        """(last finished round, global weights) of an interrupted run, if any."""
        if not self.checkpoint.is_file():
            return None
        saved = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        return int(saved["round"]), saved["state_dict"]

    def save_checkpoint(self, server_round: int, arrays: ArrayRecord) -> None:
        self._save({"round": server_round, "state_dict": arrays.to_torch_state_dict()},
                   self.checkpoint)

    def save_final(self, arrays: ArrayRecord) -> None:
        self._save(arrays.to_torch_state_dict(), self.root / "final_model.pt")

    def history(self) -> list[dict]:
        path = self.root / "history.json"
        return json.loads(path.read_text())["rounds"] if path.is_file() else []

    def write_history(self, result: Result, first_round: int, extra: dict | None = None,
                      round_seconds: dict[int, float] | None = None,
                      failed: list[dict] | None = None,
                      eval_errors: dict[int, list[str]] | None = None,
                      per_round: dict[int, dict] | None = None) -> list[dict]:
        """Merge this run's rounds (numbered from ``first_round + 1``) into the history;
        ``round_seconds`` adds each round's wall time (from its previous round's end);
        ``failed``: rounds that kept the previous model (``round`` counted from the run's
        start, ``replies``, ``errors``), marked ``"status": "failed"`` (the others ``"ok"``);
        ``eval_errors``: per round (counted the same way), the nodes that failed to evaluate;
        ``per_round``: more values per round (counted the same way), e.g. privacy spent."""
        rounds = {entry["round"]: entry for entry in self.history() if entry["round"] <= first_round}
        for source in (result.train_metrics_clientapp, result.evaluate_metrics_clientapp):
            for r, metrics in source.items():
                entry = rounds.setdefault(first_round + r, {"round": first_round + r})
                entry.update({k: float(v) for k, v in metrics.items() if not isinstance(v, list)})
        for r, value in (round_seconds or {}).items():
            rounds.setdefault(first_round + r, {"round": first_round + r})["round_seconds"] = value
        for r, errors in (eval_errors or {}).items():
            rounds.setdefault(r, {"round": r})["eval_errors"] = errors
        for r, values in (per_round or {}).items():
            rounds.setdefault(r, {"round": r}).update(values)
        failures = {f["round"]: f for f in failed or []}
        for r in failures:
            rounds.setdefault(r, {"round": r})
        for r, entry in rounds.items():
            if r > first_round:
                entry.update({"status": "failed", "replies": failures[r]["replies"],
                              "errors": failures[r]["errors"]} if r in failures else {"status": "ok"})
        ordered = [rounds[r] for r in sorted(rounds)]
        atomic_write_bytes(self.root / "history.json",
                           json.dumps({"rounds": ordered, **(extra or {})}, indent=2).encode())
        self._write_csv(ordered)
        self._plot(ordered)
        return ordered

    def _write_csv(self, rounds: list[dict]) -> None:
        columns = sorted({k for entry in rounds for k in entry}, key=lambda k: (k != "round", k))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: " | ".join(v) if isinstance(v, list) else v for k, v in e.items()}
                         for e in rounds)
        atomic_write_bytes(self.root / "history.csv", buffer.getvalue().encode())

    def _plot(self, rounds: list[dict]) -> None:
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        from deid_client.figures import save_figure

        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100, layout="constrained")
        for key, label in (("eval_dice", "Dice"), ("eval_iou", "IoU")):
            points = [(e["round"], e[key]) for e in rounds if key in e]
            if points:
                left.plot(*zip(*points), marker="o", label=label)
        left.set(xlabel="round", ylabel="global model, held-out", title="Segmentation quality",
                 ylim=(0, 1))
        if left.lines:
            left.legend()
        points = [(e["round"], e["train_loss"]) for e in rounds if "train_loss" in e]
        if points:
            right.plot(*zip(*points), marker="o", color="tab:red")
        right.set(xlabel="round", ylabel="Dice + BCE", title="Training loss")
        for axis in (left, right):
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        save_figure(fig, self.root / "convergence.png")

    @staticmethod
    def _save(obj, path: Path) -> None:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        atomic_write_bytes(path, buffer.getvalue())
