"""The privacy-utility frontier: for each firewall setting, the worst attacker's
re-identification of surrogates against the Dice it costs (docs/frontier.md).

    python benchmarks/frontier.py            # the table; docs/generated/frontier.{png,json}

y: held-out Dice of the study's 2-client FedAvg ``surrogate`` cells (``docs/generated/study.json``,
3 seeds, non-IID 0.2 and 0.8) over the ``truth`` cell's of the same clients, non-IID and
strategy; mean over seeds, then over the non-IID levels. The study sweeps the settings
with ``data.firewall`` (docs/study.md).

x: the privacy benchmark (``benchmarks/phantom_deid.py``, 50 patients x 5 surrogates,
chance 0.02): the worst of its four attackers on single surrogates and, for
``surrogates_per_photo=K``, on a photo's K surrogates pooled (``reid_pooled<K>``). Each
benchmark run records its firewall (``docs/generated/phantom_deid*/phantom_deid.json``: the
shipped default's in ``docs/generated/phantom_deid/``), and its figures count for every setting that composes
to the same firewall in all but K. Levels measured on earlier days are quoted from
docs/privacy_attackers.md (:data:`EARLIER`).
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import numpy as np

import _repo  # the repository's docs/ and research/
from deid_client.firewall import compose_firewall
from deid_client.firewall.config import settings_record
from research.reid import ATTACKERS

DOCS = _repo.ROOT / "docs" / "generated"  # the result files, apart from the pages
# The worst attacker on surrogates for levels no recorded benchmark run measured,
# as docs/privacy_attackers.md records them (50 x 5, the same patients).
EARLIER = {  # by privacy level, at K = 1
    "low": {"reid_surrogate": 0.596, "worst_attacker": "aware",
            "note": "section 'The edited route'; mimic not run at 50 x 5 (0.70 on the 20 x 2 sweep)"},
    "medium": {"reid_surrogate": 0.080, "worst_attacker": "aware",
               "note": "section 'The shipped firewall: the face drawn anew'; mimic not run"},
}


def privacy(setting: str, benchmarks: list[dict]) -> dict:
    """The worst re-identification of surrogates under ``setting`` (a ``data.firewall`` string,
    "" for the shipped default), from the privacy benchmark run whose recorded firewall
    (``firewall_settings``) is the setting's, resolved by the package's own config, in all
    but K: one surrogate at a time and, for K > 1, a photo's K surrogates pooled, whichever
    is worse. Levels measured on earlier days (:data:`EARLIER`) count at K = 1 only."""
    cfg = compose_firewall(shlex.split(setting))  # a ValueError for a key the firewall lacks
    k, mine = cfg.surrogates_per_photo, _but_k(cfg)
    for benchmark in benchmarks:
        if _but_k(benchmark["firewall_settings"]) == mine:
            return _worst(benchmark, k, setting)
    for level, figures in EARLIER.items():
        if k == 1 and _but_k(compose_firewall([f"privacy={level}"])) == mine:
            return figures
    raise ValueError(f"no privacy figures on record for firewall setting {setting!r}")


def _but_k(settings) -> dict:
    """A firewall's settings (a ``FirewallConfig`` or its record) without K: the benchmark
    measures every K up to its surrogates per patient."""
    record = settings if isinstance(settings, dict) else settings_record(settings, complete=True)
    return {key: value for key, value in record.items() if key != "surrogates_per_photo"}


def _worst(benchmark: dict, k: int, setting: str) -> dict:
    single = {"reid_surrogate": benchmark["reid_surrogate"], "worst_attacker": benchmark["worst_attacker"]}
    if k == 1:
        return single
    key = f"reid_pooled{k}_surrogate"
    if key not in benchmark:
        raise ValueError(f"{setting}: the privacy benchmark's record has no {key}; rerun it "
                         f"with --identities {k} or more")
    pooled = {"reid_surrogate": benchmark[key], "worst_attacker": max(
        ATTACKERS, key=lambda n: benchmark.get(f"{key}_{n}", -1)) + " (pooled)"}
    return max(single, pooled, key=lambda p: p["reid_surrogate"])


def label(setting: str) -> str:
    """A setting as the frontier names it: the shipped default says what it is."""
    if setting:
        return setting
    cfg = compose_firewall([])
    return f"default (privacy={cfg.privacy}, K={cfg.surrogates_per_photo}, lesion_gain={cfg.lesion_gain:g})"


def utility(runs: list[dict], setting: str, clients: int = 2, strategy: str = "fedavg") -> dict | None:
    """Dice / truth Dice of the ``surrogate`` cells with this setting, per non-IID level and
    mean; ``None`` where the study has no such cell."""
    def final(source: str, firewall: str, non_iid: float) -> list[float]:
        return [r["dice"][-1] for r in runs
                if (r["mask_source"], r.get("firewall", ""), r["clients"], r["strategy"], r["non_iid"])
                == (source, firewall, clients, strategy, non_iid)]

    levels = sorted({r["non_iid"] for r in runs if r["mask_source"] == "surrogate"
                     and r.get("firewall", "") == setting and r["clients"] == clients})
    per_level = {}
    for non_iid in levels:
        mine, truth = final("surrogate", setting, non_iid), final("truth", "", non_iid)
        if mine and truth:
            per_level[non_iid] = {"dice": float(np.mean(mine)), "truth": float(np.mean(truth)),
                                  "ratio": float(np.mean(mine) / np.mean(truth)), "seeds": len(mine)}
    if not per_level:
        return None
    return {"per_non_iid": per_level, "ratio": float(np.mean([v["ratio"] for v in per_level.values()]))}


def frontier(study: dict, benchmarks: list[dict]) -> list[dict]:
    """One row per firewall setting the study ran: its Dice ratio and its worst attacker
    (``reid_surrogate`` None where the privacy benchmark has not measured the setting)."""
    settings = sorted({r.get("firewall", "") for r in study["runs"] if r["mask_source"] == "surrogate"})
    rows = []
    for setting in settings:
        use = utility(study["runs"], setting)
        if use is None:
            continue
        try:
            measured = privacy(setting, benchmarks)
        except ValueError:  # a y without its x: listed, not placed on the figure
            measured = {"reid_surrogate": None, "worst_attacker": "not measured"}
        rows.append({"setting": label(setting), **measured, **use})
    return rows


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    placed = sorted((r for r in rows if r["reid_surrogate"] is not None), key=lambda r: r["ratio"])
    above = False
    for i, row in enumerate(placed):
        ax.scatter(row["reid_surrogate"], row["ratio"], s=40, color="tab:red")
        # labels below their point, but above where the point below sits as high: settings
        # of equal privacy and Dice sit together
        above = i > 0 and abs(row["ratio"] - placed[i - 1]["ratio"]) < 0.03 and not above
        ax.annotate(row["setting"], (row["reid_surrogate"], row["ratio"]), textcoords="offset points",
                    xytext=(6, 4 if above else -11), fontsize=8)
    ax.axvline(0.10, color="gray", ls="--", lw=1)
    ax.axhline(0.90, color="gray", ls="--", lw=1)
    ax.axvline(0.02, color="gray", ls=":", lw=1)
    ax.text(0.021, 0.505, "chance", fontsize=7, color="gray")
    ax.set(xscale="log", xlim=(0.01, 1.0), ylim=(0.5, 1.05),
           xlabel="worst attacker: share of surrogates named (log)",
           ylabel="held-out Dice / truth Dice\n(2 clients, FedAvg, 3 seeds x 2 non-IID)",
           title="the firewall's privacy-utility frontier (targets dashed)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=DOCS / "study.json")
    parser.add_argument("--privacy", type=Path, nargs="+",
                        default=sorted(DOCS.glob("phantom_deid*/phantom_deid.json")),
                        help="privacy benchmark records (each names its firewall settings)")
    parser.add_argument("--docs", type=Path, default=DOCS, help="where frontier.json and .png go")
    args = parser.parse_args()
    rows = frontier(json.loads(args.study.read_text()), [json.loads(p.read_text()) for p in args.privacy])
    (args.docs / "frontier.json").write_text(json.dumps(rows, indent=1) + "\n")
    figure(rows, args.docs / "frontier.png")
    print("| setting | worst attacker on surrogates | Dice / truth (non-IID 0.2, 0.8) | mean |")
    print("|---|---|---|---|")
    for r in rows:
        levels = ", ".join(f"{v['dice']:.3f} / {v['truth']:.3f} = {v['ratio']:.2f}"
                           for v in r["per_non_iid"].values())
        x = (f"{r['reid_surrogate']:.3f} ({r['worst_attacker']})" if r["reid_surrogate"] is not None
             else "not measured")
        print(f"| {r['setting']} | {x} | {levels} | {r['ratio']:.2f} |")


if __name__ == "__main__":
    main()
