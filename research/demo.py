"""The phantom demo: phantom cohort -> differential masks -> theta* -> figures.

    python -m research.demo -o outputs/demo
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from research.mask_scores import distribution_report, score_phantom_masks
from deid_client.figures import comparison_overlay, figure_to_array, heatmap_figure, image_grid, mask_overlay
from deid_client.io.images import atomic_write_bytes, write_image
from deid_client.firewall.masks import a_star, erythema_map, threshold_mask
from research.mask_sources import naive_mask
from research.plots import histogram_figure
from deid_client.phantom import plan_cohort, write_cohort

__all__ = ["run_demo"]


def run_demo(
    output_dir: str | os.PathLike,
    *,
    n_images: int = 40,
    n_hospitals: int = 2,
    size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Write a phantom cohort, calibrate theta*, score masks, draw the figures.

    Files (all under ``output_dir``): ``cohort/`` (see ``deid-client phantom``),
    ``summary.json`` and ``figures/*.png``. Returns the summary.
    """
    root = Path(output_dir)
    cases = plan_cohort(n_images, n_hospitals, seed=seed)
    report = write_cohort(cases, root / "cohort", size=size, progress=progress,
                          keep_phantoms=True)
    phantoms = [p for _, p in report.results]
    summary = score_phantom_masks(phantoms)
    theta = summary["theta_star"]
    summary["distribution_first_case"] = distribution_report(phantoms[0].image, phantoms[0].twin)

    figures = root / "figures"
    shown = phantoms[:6]
    rows = []
    for p in shown:
        ours = threshold_mask(erythema_map(p.image, p.twin), theta)
        rows += [p.image, p.twin, mask_overlay(p.image, ours),
                 comparison_overlay(p.mask, ours, p.image),
                 comparison_overlay(p.mask, naive_mask(p.image, p.face), p.image)]
    write_image(figures / "cases.png", image_grid(rows, ncols=5))
    first = phantoms[0]
    write_image(figures / "heatmap.png", figure_to_array(
        heatmap_figure(erythema_map(first.image, first.twin), theta=theta)))
    write_image(figures / "histograms.png", figure_to_array(histogram_figure(
        {"pathological": a_star(first.image)[first.face], "healthy twin": a_star(first.twin)[first.face]},
        range=(0, 40), title="a* inside the face, first case")))
    atomic_write_bytes(root / "summary.json", json.dumps(summary, indent=2).encode())
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.demo", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("outputs/demo"))
    parser.add_argument("-n", "--images", type=int, default=40)
    parser.add_argument("--hospitals", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = run_demo(args.output, n_images=args.images, n_hospitals=args.hospitals, size=args.size,
                       seed=args.seed)
    print(json.dumps({k: v for k, v in summary.items() if k != "per_image_iou"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
