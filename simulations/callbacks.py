"""Hydra callback: after a sweep, one comparison table (CSV + Markdown) of all its runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

COLUMNS = ("job", "clients", "rounds", "mask_source", "strategy", "non_iid", "first_dice",
           "final_dice", "best_dice", "final_iou")


def comparison_table(sweep_dir: str | Path) -> list[dict]:
    """Rows from every ``<job>/result.json`` under a sweep folder; writes
    ``comparison.csv`` and ``comparison.md`` there."""
    sweep_dir = Path(sweep_dir)
    rows = []
    for result in sorted(sweep_dir.glob("*/result.json"), key=lambda p: int(p.parent.name)
                         if p.parent.name.isdigit() else p.parent.name):
        rows.append({"job": result.parent.name, **json.loads(result.read_text())})
    with (sweep_dir / "comparison.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in COLUMNS) + " |")
    (sweep_dir / "comparison.md").write_text("\n".join(lines) + "\n")
    return rows


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


class SweepTable(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = comparison_table(sweep_dir)
        print((sweep_dir / "comparison.md").read_text())
        print(f"{len(rows)} runs compared: {sweep_dir / 'comparison.csv'}")
