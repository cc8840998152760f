"""The privacy-utility frontier: for each firewall setting, the worst attacker's
re-identification of surrogates against the Dice it costs (docs/frontier.md).

    python benchmarks/frontier.py            # the table; docs/frontier.png and docs/frontier.json

y: held-out Dice of the study's 2-client FedAvg ``surrogate`` cells (``docs/study.json``,
3 seeds, non-IID 0.2 and 0.8) over the ``truth`` cell's of the same clients, non-IID and
strategy; mean over seeds, then over the non-IID levels. The study sweeps the settings
with ``data.firewall`` (docs/study.md).

x: the privacy benchmark (``benchmarks/phantom_deid.py``, 50 patients x 5 surrogates,
chance 0.02): the worst of its four attackers on single surrogates and, for
``surrogates_per_photo=K``, on a photo's K surrogates pooled (``reid_pooled<K>``). The
shipped default's figures are read from ``docs/phantom_deid/phantom_deid.json``; the other
levels were measured on earlier days and are quoted from docs/privacy_attackers.md
(:data:`EARLIER`).
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import numpy as np

import _repo  # the repository's docs/ and research/
from deid_client.firewall import compose_firewall
from research.reid import ATTACKERS

DOCS = _repo.ROOT / "docs"
# The worst attacker on surrogates for settings the benchmark's last run did not measure,
# as docs/privacy_attackers.md records them (50 x 5, the same patients).
EARLIER = {  # by privacy level, at K = 1
    "low": {"reid_surrogate": 0.596, "worst_attacker": "aware",
            "note": "section 'The edited route'; mimic not run at 50 x 5 (0.70 on the 20 x 2 sweep)"},
    "medium": {"reid_surrogate": 0.080, "worst_attacker": "aware",
               "note": "section 'The shipped firewall: the face drawn anew'; mimic not run"},
}


def privacy(setting: str, benchmark: dict) -> dict:
    """The worst re-identification of surrogates under ``setting`` (a ``data.firewall`` string,
    "" for the shipped default), resolved by the package's own config: the benchmark's
    figures are the default privacy level's, one surrogate at a time and, for K > 1, a
    photo's K surrogates pooled, whichever is worse."""
    overrides = shlex.split(setting)
    if {o.split("=")[0] for o in overrides} - {"privacy", "surrogates_per_photo"}:
        raise ValueError(f"no privacy figures on record for firewall setting {setting!r}")
    cfg, default = compose_firewall(overrides), compose_firewall([])
    k = cfg.surrogates_per_photo
    if cfg.privacy != default.privacy:
        if cfg.privacy not in EARLIER or k > 1:
            raise ValueError(f"no privacy figures on record for firewall setting {setting!r}")
        return EARLIER[cfg.privacy]
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
    return f"default (privacy={cfg.privacy}, K={cfg.surrogates_per_photo})"


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


def frontier(study: dict, benchmark: dict) -> list[dict]:
    """One row per firewall setting the study ran: its Dice ratio and its worst attacker
    (``reid_surrogate`` None where the privacy benchmark has not measured the setting)."""
    settings = sorted({r.get("firewall", "") for r in study["runs"] if r["mask_source"] == "surrogate"})
    rows = []
    for setting in settings:
        use = utility(study["runs"], setting)
        if use is None:
            continue
        try:
            measured = privacy(setting, benchmark)
        except ValueError:  # a y without its x: listed, not placed on the figure
            measured = {"reid_surrogate": None, "worst_attacker": "not measured"}
        rows.append({"setting": label(setting), **measured, **use})
    return rows


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, row in enumerate(r for r in rows if r["reid_surrogate"] is not None):
        ax.scatter(row["reid_surrogate"], row["ratio"], s=40, color="tab:red")
        # labels above and below in turn: settings of equal privacy and Dice sit together
        ax.annotate(row["setting"], (row["reid_surrogate"], row["ratio"]), textcoords="offset points",
                    xytext=(6, 4 if i % 2 == 0 else -11), fontsize=8)
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
    parser.add_argument("--privacy", type=Path, default=DOCS / "phantom_deid" / "phantom_deid.json")
    parser.add_argument("--docs", type=Path, default=DOCS)
    args = parser.parse_args()
    rows = frontier(json.loads(args.study.read_text()), json.loads(args.privacy.read_text()))
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
