"""The federated study's report: one table and one convergence figure from a sweep.

    python -m simulations.run --config-name study -m     # runs the grid (conf/study.yaml)
    python -m simulations.study outputs/study            # rewrites the report alone

Every cell of the sweep is one run (``result.json`` + ``history.json``); cells that
differ only by seed are one row of the table, Dice mean ± std over the seeds. The
figure shows Dice by round per mask source, one panel per (clients, non-IID). Written
to ``docs/study.md``, ``docs/generated/study.png`` and ``docs/generated/study.json``.

The report keeps the runs of the ``study.json`` it replaces that this sweep does not
hold, so the grid can be run in slices, on several machines or sessions (the sweep
folder is an output and may be gone). ``--fresh`` (or deleting ``study.json``) starts
the report over.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

__all__ = ["collect", "merge_runs", "summarise_cells", "study_grid", "missing_runs", "write_report",
           "StudyReport", "firewall_record", "firewall_label"]

#: A cell's identity. ``firewall``: the run's firewall as overrides of today's shipped one
#: (:func:`firewall_label`; "" for the shipped defaults, as in runs recorded before it was a
#: column).
GRID = ("mask_source", "firewall", "clients", "non_iid", "strategy", "rounds")
# Display order and colour, the upper bound first.
SOURCE_COLOURS = {"truth": "black", "oracle": "tab:blue", "surrogate": "tab:red", "naive": "tab:gray"}
# Cells with firewall overrides, in the order their overrides sort.
OVERRIDE_COLOURS = ("tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
DOCS = Path(__file__).resolve().parent.parent / "docs"
GENERATED = "generated"  # the result files, apart from the pages that explain them


def collect(sweep_dir: str | Path) -> list[dict]:
    """One entry per finished run under ``sweep_dir``: its settings and Dice by round."""
    runs = []
    for result in sorted(Path(sweep_dir).glob("**/result.json")):
        history = result.parent / "history.json"
        if not history.is_file():
            continue
        summary = json.loads(result.read_text())
        rounds = json.loads(history.read_text())["rounds"]
        run = {k: summary.get(k) for k in (*GRID, "seed", "firewall_settings") if k in summary}
        runs.append(_labelled(run) | {"dice": [r.get("eval_dice") for r in rounds]})
    return runs


def firewall_record(settings) -> dict:
    """A run's firewall settings (a ``FirewallConfig``) as plain JSON values, for its
    ``result.json``: what :func:`firewall_label` reads."""
    from deid_client.firewall.config import settings_record

    return settings_record(settings, complete=True)


def firewall_label(record: dict) -> str:
    """A run's firewall (:func:`firewall_record`) as overrides of the shipped firewall of
    today: its privacy level where that differs, then every setting that differs from that
    level's. So a run keeps its meaning when a default changes: a setting added since the
    run had its old value then (``ADDED_SETTINGS``); one removed since is not compared.

    >>> from deid_client.firewall import compose_firewall
    >>> firewall_label(firewall_record(compose_firewall(["surrogates_per_photo=1", "privacy=low"])))
    'privacy=low surrogates_per_photo=1'
    >>> firewall_label(firewall_record(compose_firewall()))
    ''
    """
    from deid_client.firewall.config import ADDED_SETTINGS

    overrides = [] if record["privacy"] == _shipped("")["privacy"] else [f"privacy={record['privacy']}"]
    shipped, run = _flat(_shipped(" ".join(overrides))), _flat(ADDED_SETTINGS | record)
    overrides += [f"{key}={_value(value)}" for key, value in sorted(run.items())
                  if key in shipped and value != shipped[key]]
    return " ".join(overrides)


@functools.lru_cache
def _shipped(overrides: str) -> dict:
    from deid_client.firewall.config import compose_firewall

    return firewall_record(compose_firewall(overrides.split()))


def _flat(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        flat |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return flat


def _value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _labelled(run: dict) -> dict:
    """``run`` with its ``firewall`` label: from its recorded settings where it ran the
    firewall (``surrogate``), else as recorded ("" for runs from before the column)."""
    if run.get("firewall_settings") and run["mask_source"] == "surrogate":
        return run | {"firewall": firewall_label(run["firewall_settings"])}
    return run | {"firewall": run.get("firewall") or ""}


def merge_runs(previous: list[dict], runs: list[dict]) -> list[dict]:
    """``runs`` and those of ``previous`` that none of them redoes (same cell, same seed),
    in a stable order: the grid's, then the seed.

    >>> old = [{"mask_source": "truth", "firewall": "", "clients": 2, "non_iid": 0.2, "strategy": "fedavg",
    ...         "rounds": 5, "seed": s, "dice": [0.1]} for s in (0, 1)]
    >>> new = [dict(old[1], dice=[0.2])]
    >>> [r["dice"] for r in merge_runs(old, new)]
    [[0.1], [0.2]]
    """
    def run_key(run: dict) -> tuple:
        return *(run[k] for k in GRID), run["seed"]

    merged = {run_key(r): r for r in previous} | {run_key(r): r for r in runs}
    return [merged[k] for k in sorted(merged, key=lambda k: (_order(k[:-1]), k[-1]))]


def summarise_cells(runs: list[dict]) -> list[dict]:
    """Runs grouped by everything but the seed: final Dice mean and std over seeds, and
    the mean curve (runs of a cell have the same number of rounds: it is part of the cell)."""
    cells = defaultdict(list)
    for run in runs:
        cells[tuple(run[k] for k in GRID)].append(run)
    rows = []
    for key, group in sorted(cells.items(), key=lambda item: _order(item[0])):
        finals = np.array([g["dice"][-1] for g in group], float)
        if len({len(g["dice"]) for g in group}) > 1:
            raise ValueError(f"cell {key}: its runs' histories differ in length "
                             f"({sorted(len(g['dice']) for g in group)} rounds)")
        curves = np.array([g["dice"] for g in group], float)
        rows.append({**dict(zip(GRID, key)), "seeds": sorted(g["seed"] for g in group),
                     "final_dice_mean": float(finals.mean()), "final_dice_std": float(finals.std()),
                     "curve": curves.mean(axis=0).round(4).tolist()})
    return rows


#: ``conf/study.yaml``'s swept keys -> a run's fields
_SWEPT = {"data.mask_source": "mask_source", "simulation.num_clients": "clients", "data.non_iid": "non_iid",
          "strategy": "strategy", "data.seed": "seed"}


def study_grid(overrides: list[str] | None = None) -> dict[str, list]:
    """The grid ``conf/study.yaml`` sweeps, as run fields (``mask_source``, ``clients``,
    ``non_iid``, ``strategy``, ``seed``, ``rounds``) -> the values swept.

    >>> study_grid()["clients"], study_grid(["simulation.rounds=2"])["rounds"]
    ([2, 4, 8], [2])
    """
    from hydra import compose, initialize_config_dir

    from deid_client.firewall.config import own_hydra

    from .defaults import register

    register()  # conf/'s groups extend the run config's defaults
    conf = Path(__file__).resolve().parent.parent / "conf"
    # also from the study's own Hydra callback, inside the running sweep
    with own_hydra(), initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="study", overrides=overrides or [], return_hydra_config=True)
    grid = {_SWEPT[key]: [_number(v) for v in str(values).split(",")]
            for key, values in cfg.hydra.sweeper.params.items()}
    return grid | {"rounds": [int(cfg.simulation.rounds)]}


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def missing_runs(runs: list[dict], grid: dict[str, list]) -> list[dict]:
    """The runs of ``grid`` (:func:`study_grid`) at today's shipped firewall that ``runs``
    lack, in the grid's order.

    >>> grid = {"mask_source": ["truth"], "clients": [2, 4], "non_iid": [0.2], "strategy": ["fedavg"],
    ...         "seed": [0, 1], "rounds": [5]}
    >>> done = [{"mask_source": "truth", "firewall": "", "clients": 2, "non_iid": 0.2,
    ...          "strategy": "fedavg", "rounds": 5, "seed": s} for s in (0, 1)]
    >>> [(r["clients"], r["seed"]) for r in missing_runs(done, grid)]
    [(4, 0), (4, 1)]
    """
    done = {(*(r[k] for k in GRID), r["seed"]) for r in runs}
    fields = list(grid)
    wanted = [dict(zip(fields, values)) | {"firewall": ""} for values in itertools.product(*grid.values())]
    return sorted((w for w in wanted if (*(w[k] for k in GRID), w["seed"]) not in done),
                  key=lambda w: (_order(tuple(w[k] for k in GRID)), w["seed"]))


def _missing_text(missing: list[dict], grid: dict[str, list]) -> str:
    """The missing runs, one line per (clients, strategy): what a newcomer would run next."""
    if not missing:
        return "Every cell of the grid (`conf/study.yaml`) is run at today's defaults."
    slices = defaultdict(lambda: defaultdict(int))
    for run in missing:
        slices[run["clients"], run["strategy"]][run["mask_source"]] += 1
    lines = [f"Not yet run at today's defaults: {len(missing)} of the grid's "
             f"{int(np.prod([len(v) for v in grid.values()]))} runs (`conf/study.yaml`):"]
    for (clients, strategy), sources in sorted(slices.items()):
        counts = ", ".join(f"`{s}` {sources[s]}" for s in sorted(sources, key=list(SOURCE_COLOURS).index))
        lines.append(f"- {clients} clients, {strategy}: {counts}")
    return "\n".join(lines)


def _order(key: tuple) -> tuple:
    source, firewall, clients, non_iid, strategy, rounds = key
    return rounds, clients, non_iid, strategy, list(SOURCE_COLOURS).index(source), firewall


def write_report(sweep_dir: str | Path, docs_dir: str | Path = DOCS, *, fresh: bool = False) -> list[dict]:
    """``study.md`` (the table) in ``docs_dir``, ``study.png`` (the curves) and ``study.json``
    in its ``generated/`` folder: the runs under ``sweep_dir``, with the earlier report's
    other runs unless ``fresh``."""
    docs_dir = Path(docs_dir)
    (docs_dir / GENERATED).mkdir(parents=True, exist_ok=True)
    report_json = docs_dir / GENERATED / "study.json"
    earlier = [] if fresh or not report_json.is_file() else json.loads(report_json.read_text())["runs"]
    earlier = [_labelled(r) for r in earlier]
    runs = merge_runs(earlier, collect(sweep_dir))
    rows = summarise_cells(runs)
    grid = study_grid()
    report_json.write_text(json.dumps({"runs": runs, "cells": rows}, indent=1))
    _figure(rows, docs_dir / GENERATED / "study.png")
    lines = ["| rounds | clients | non-IID | strategy | mask source | firewall "
             "| final Dice (mean ± std) | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['rounds']} | {r['clients']} | {r['non_iid']} | {r['strategy']} | "
                     f"{r['mask_source']} | {r['firewall'] or '—'} | "
                     f"{r['final_dice_mean']:.3f} ± {r['final_dice_std']:.3f} | {len(r['seeds'])} |")
    table = "\n".join(lines)
    report = docs_dir / "study.md"
    text = report.read_text() if report.is_file() else "# The federated study\n\n<!-- table -->\n"
    start, end = "<!-- table -->", "<!-- /table -->"
    head = text.split(start)[0]
    tail = text.split(end)[1] if end in text else "\n"
    report.write_text(f"{head}{start}\n{table}\n\n{len(runs)} runs in {len(rows)} cells "
                      f"(`docs/{GENERATED}/study.json`; figure `docs/{GENERATED}/study.png`).\n\n"
                      f"{_missing_text(missing_runs(runs, grid), grid)}\n{end}{tail}")
    return rows


def _figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    # One row per (rounds, clients), one column per non-IID level.
    rows_of = sorted({(r["rounds"], r["clients"]) for r in rows})
    columns = sorted({r["non_iid"] for r in rows})
    if not rows_of:
        return
    fig, axes = plt.subplots(len(rows_of), len(columns), figsize=(4.2 * len(columns), 3.2 * len(rows_of)),
                             squeeze=False, sharey=True)
    styles = {"fedavg": "-", "fedprox": "--", "centralised": ":"}
    overrides = sorted({r["firewall"] for r in rows} - {""})
    colours = {o: OVERRIDE_COLOURS[i % len(OVERRIDE_COLOURS)] for i, o in enumerate(overrides)}
    legend = {}
    for (i, (rounds, clients)), (j, non_iid) in itertools.product(enumerate(rows_of), enumerate(columns)):
        ax = axes[i][j]
        for r in (r for r in rows if (r["rounds"], r["clients"], r["non_iid"]) == (rounds, clients, non_iid)):
            label = f"{r['mask_source']}, {r['strategy']}" + (f", {r['firewall']}" if r["firewall"] else "")
            colour = colours.get(r["firewall"], SOURCE_COLOURS[r["mask_source"]])
            legend[label], = ax.plot(range(1, len(r["curve"]) + 1), r["curve"],
                                     styles.get(r["strategy"], "-."), color=colour,
                                     marker="o", markersize=3, label=label)
        ax.set(title=f"{clients} clients, non-IID {non_iid}, {rounds} rounds", ylim=(0, 1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if i == len(rows_of) - 1:
            ax.set_xlabel("round")
        if j == 0:
            ax.set_ylabel("held-out Dice\n(mean over seeds)")
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=min(len(legend), 4), fontsize=8)
    fig.tight_layout(rect=(0, 0.12 / len(rows_of) + 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


class StudyReport(Callback):
    """Hydra callback (``conf/study.yaml``): the report, into ``docs_dir``, after the sweep."""

    def __init__(self, docs_dir: str = str(DOCS), fresh: bool = False):
        self.docs_dir = Path(docs_dir)
        self.fresh = fresh

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        rows = write_report(config.hydra.sweep.dir, self.docs_dir, fresh=self.fresh)
        print(f"study: {len(rows)} cells -> {self.docs_dir / 'study.md'}, "
              f"{GENERATED}/study.png, {GENERATED}/study.json")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", nargs="?", default="outputs/study")
    parser.add_argument("--docs", default=str(DOCS))
    parser.add_argument("--fresh", action="store_true", help="drop the earlier report's runs")
    args = parser.parse_args()
    print(f"{len(write_report(args.sweep_dir, args.docs, fresh=args.fresh))} cells written to {args.docs}")
