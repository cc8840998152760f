"""Held-out Dice against the privacy spent: the main job (2 phantom sites, 5 rounds, the
firewall) under each differential-privacy mode and noise level (docs/update_leakage.md).

Each level is a whole Flower simulation of the main job with ``dp`` and ``dp-noise``
(``client``, ``central``) or ``dp-epsilon`` (``local``) set; the nodes' prepared data is
shared with the main job's cache. One run is about 3 min on 2 cores.

    python benchmarks/dp_utility.py --json
    python benchmarks/dp_utility.py --levels client:0.01 local:100 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import _repo  # noqa: F401  (simulations/ from the checkout)
from simulations.engine import run_simulation

DEFAULT_LEVELS = ["off", "client:0.001", "client:0.01", "client:0.1", "client:1.0"]


def settings(level: str, output_dir: Path) -> dict:
    """The run config for ``off``, ``client:<noise>``, ``central:<noise>`` or ``local:<epsilon>``."""
    mode, _, value = level.partition(":")
    config = {"output-dir": str(output_dir), "dp": mode}
    if mode in ("client", "central"):
        config["dp-noise"] = float(value)
    elif mode == "local":
        config["dp-epsilon"] = float(value)
    return config


def measure(level: str, cache_dir: Path, workdir: Path) -> dict:
    output_dir = workdir / level.replace(":", "-")
    started = time.perf_counter()
    code = run_simulation(settings(level, output_dir), num_supernodes=2, cache_dir=cache_dir,
                          workdir=workdir, stream=sys.stderr)
    seconds = time.perf_counter() - started
    if code != 0:
        return {"level": level, "error": f"flwr run exit code {code}"}
    history = json.loads((output_dir / "history.json").read_text())
    rounds = history["rounds"]
    return {"level": level, "dice": [round(r.get("eval_dice", float("nan")), 4) for r in rounds],
            "final_dice": rounds[-1].get("eval_dice"), "dp_epsilon": history.get("dp_epsilon"),
            "dp_delta": history.get("dp_delta"), "seconds": round(seconds, 1)}


def figure(results: list[dict], path: Path, baseline: float | None = None) -> None:
    """Final held-out Dice against the epsilon spent (log scale), one point per level."""
    import matplotlib.pyplot as plt

    from deid_client.figures import save_figure

    fig, axis = plt.subplots(figsize=(5.5, 3.6), dpi=100, layout="constrained")
    done = [r for r in results if r.get("dp_epsilon")]
    for mode, marker in (("client", "o"), ("central", "s"), ("local", "^")):
        points = [(r["dp_epsilon"], r["final_dice"]) for r in done if r["level"].startswith(mode)]
        if points:
            axis.plot(*zip(*sorted(points)), marker=marker, label=f"dp = {mode}")
            for r in (r for r in done if r["level"].startswith(mode)):
                axis.annotate(r["level"].partition(":")[2], (r["dp_epsilon"], r["final_dice"]),
                              fontsize=7, xytext=(3, 3), textcoords="offset points")
    if baseline is not None:
        axis.axhline(baseline, color="grey", linestyle="--", label="dp = off")
    axis.set(xscale="log", xlabel="epsilon spent after 5 rounds (delta 1e-5)",
             ylabel="held-out Dice, last round", ylim=(0, 1), title="Differential privacy, main job")
    axis.legend()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", nargs="+", default=DEFAULT_LEVELS)
    parser.add_argument("--cache-dir", type=Path, default=Path("outputs/cache"))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--figure", type=Path, help="also draw Dice against epsilon here (PNG)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dp-utility-") as scratch:
        results = []
        for level in args.levels:
            results.append(measure(level, args.cache_dir, Path(scratch)))
            print(f"{level}: {results[-1]}", file=sys.stderr, flush=True)
    if args.figure:
        off = [r["final_dice"] for r in results if r["level"] == "off" and "final_dice" in r]
        figure(results, args.figure, off[0] if off else None)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{'level':>14} {'final Dice':>10} {'epsilon':>12}")
        for r in results:
            print(f"{r['level']:>14} {r.get('final_dice') or float('nan'):>10.4f} "
                  f"{r.get('dp_epsilon') or 0.0:>12.4g}")


if __name__ == "__main__":
    main()
