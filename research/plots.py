"""Research plots: a* histograms and the privacy / utility trade-off (benchmarks, demo)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from research.statistics import A_STAR_RANGE

__all__ = ["histogram_figure", "tradeoff_figure"]


def histogram_figure(
    samples: Mapping[str, np.ndarray],
    *,
    bins: int = 100,
    range: tuple[float, float] = A_STAR_RANGE,
    title: str = "Normalised a* histograms",
) -> Figure:
    """Overlaid normalised histograms of a* values, one curve per named sample."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100, layout="constrained")
    edges = np.linspace(*range, bins + 1)
    for name, values in samples.items():
        counts, _ = np.histogram(np.ravel(values), bins=edges)
        ax.stairs(counts / max(counts.sum(), 1), edges, label=name, linewidth=1.4)
    ax.set_xlabel("CIELAB a*")
    ax.set_ylabel("fraction of pixels")
    ax.set_title(title)
    ax.legend()
    return fig


def tradeoff_figure(rows: Sequence[Mapping[str, float]], attackers: Sequence[str], *, label: str,
                    group: str | None = None, title: str = "") -> Figure:
    """Each attacker's re-identification (``reid_surrogate_<attacker>``) against lesion IoU
    (``lesion_iou_mean``), one point per row, labelled by its ``label`` value; rows with
    different ``group`` values are separate curves (solid, dashed, ...)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=100, layout="constrained")
    groups = list(dict.fromkeys(r[group] for r in rows)) if group else [None]
    colours = dict(zip(attackers, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for style, value in zip(("o-", "s--", "^:", "d-."), groups):
        members = [r for r in rows if group is None or r[group] == value]
        iou = [r["lesion_iou_mean"] for r in members]
        for name in attackers:
            ax.plot(iou, [r[f"reid_surrogate_{name}"] for r in members], style, color=colours[name],
                    label=name if value is None else f"{name}, {group} {value}")
        for r in members:
            ax.annotate(f"{r[label]:g}", (r["lesion_iou_mean"],
                                           max(r[f"reid_surrogate_{n}"] for n in attackers)),
                        textcoords="offset points", xytext=(3, 4), fontsize=8)
    ax.set_xlabel("lesion IoU of the surrogate masks")
    ax.set_ylabel("surrogates re-identified")
    ax.set_ylim(0, 1)
    ax.legend(title="attacker", fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig
