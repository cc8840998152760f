"""The paper's distribution table, on phantoms: how alike are the a* distributions of each pair?

    python benchmarks/distributions.py --out docs      # docs/distributions.{json,md,png}
    python benchmarks/distributions.py --json          # the figures only

For every phantom patient the firewall (``deid_client/firewall/conf/firewall.yaml``, the phantom
model) makes a synthetic healthy version of the original (the twin edit on the
patient's photo) and a surrogate with its healthy twin. Two pairs are compared, as in
the paper, by the Bhattacharyya coefficient of their normalised a* histograms and
the two-sample KS statistic of their a* values (``research.mask_scores``):

- ``original_vs_synthetic_healthy``: the patient's photo and its synthetic healthy version;
- ``surrogate_vs_twin``: the synthetic pathological twin (surrogate) and its healthy twin;
- ``original_vs_exact_healthy`` (phantoms only): the photo and its exact healthy twin,
  the ground truth the first pair approximates.

Over the whole image and inside the patient's face outline (the surrogate keeps the
face's place). Mean ± std over the cohort; the paper's figures are printed beside
them. The figure overlays the cohort's pooled a* histograms inside the face.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import _repo  # noqa: F401  (research/ and simulations/ from the checkout)
from deid_client.editing.backends import load_backend
from deid_client.firewall.config import compose_firewall
from research.mask_scores import distribution_report
from deid_client.figures import save_figure
from research.plots import histogram_figure
from research.firewall_probes import heal
from deid_client.firewall.masks import a_star
from deid_client.phantom import make_phantom
from deid_client.phantom.language import attributes_of
from deid_client.firewall import Firewall

#: The paper's figures (BC, KS) for its two pairs.
PAPER = {"original_vs_synthetic_healthy": (0.959, 0.130), "surrogate_vs_twin": (0.977, 0.103)}
SEED = 3100  # other patients than the benchmarks' and the sweep's


def measure(n_patients: int, overrides: list[str], size: int = 64) -> tuple[dict, dict]:
    """(the table as a dict, the pooled a* of every image kind) over ``n_patients``."""
    cfg = compose_firewall(overrides)
    firewall = Firewall(cfg, load_backend(cfg.model))
    phantoms = [make_phantom(SEED + i, size) for i in range(n_patients)]
    rng = np.random.default_rng(SEED)
    known = [attributes_of(p.identity) for p in phantoms]
    targets = [cfg.prompts.draw_targets(a, 1, rng, min_change=cfg.min_change)[0] for a in known]
    surrogates = firewall.synthesise([p.image for p in phantoms], targets, known, progress=True)
    healed = heal(firewall, [p.image for p in phantoms], known)
    pairs = {"original_vs_synthetic_healthy": [(p.image, h) for p, h in zip(phantoms, healed)],
             "surrogate_vs_twin": [(s.surrogate, s.twin) for s in surrogates],
             "original_vs_exact_healthy": [(p.image, p.twin) for p in phantoms]}
    table = {"patients": n_patients, "size": size, "overrides": overrides}
    for region in ("image", "face"):  # the face: the patient's face outline (surrogates keep it)
        for name, images in pairs.items():
            reports = [distribution_report(a, b, None if region == "image" else p.face)
                       for (a, b), p in zip(images, phantoms)]
            for metric in ("bhattacharyya", "ks"):
                values = np.array([r[metric] for r in reports])
                table[f"{name}_{region}_{metric}_mean"] = float(values.mean())
                table[f"{name}_{region}_{metric}_std"] = float(values.std())
    pooled = {"original": [p.image for p in phantoms],
              "synthetic healthy (of the original)": healed,
              "surrogate": [s.surrogate for s in surrogates],
              "surrogate's healthy twin": [s.twin for s in surrogates],
              "exact healthy twin": [p.twin for p in phantoms]}
    # inside the face, where the lesion is: over whole images the curves lie on each other
    return table, {k: np.concatenate([a_star(im)[p.face] for im, p in zip(v, phantoms)])
                   for k, v in pooled.items()}


def markdown(table: dict) -> str:
    rows = ["| pair | pixels | Bhattacharyya (ours) | KS (ours) | paper BC / KS |",
            "|---|---|---|---|---|"]
    for name in ("original_vs_synthetic_healthy", "surrogate_vs_twin", "original_vs_exact_healthy"):
        for region in ("image", "face"):
            key = f"{name}_{region}"
            bc = f"{table[f'{key}_bhattacharyya_mean']:.3f} ± {table[f'{key}_bhattacharyya_std']:.3f}"
            ks = f"{table[f'{key}_ks_mean']:.3f} ± {table[f'{key}_ks_std']:.3f}"
            paper = " / ".join(f"{v:.3f}" for v in PAPER[name]) if name in PAPER else "(phantoms only)"
            rows.append(f"| {name.replace('_', ' ')} | {region} | {bc} | {ks} | {paper} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument("--size", type=int, default=64, help="phantom side in pixels (the model's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path,
                        help="write distributions.md here, and distributions.json and .png in its generated/")
    parser.add_argument("overrides", nargs="*", help="firewall config overrides")
    args = parser.parse_args()
    table, pooled = measure(args.patients, args.overrides, args.size)
    if args.out is not None:
        (args.out / "generated").mkdir(parents=True, exist_ok=True)
        (args.out / "generated" / "distributions.json").write_text(json.dumps(table, indent=1) + "\n")
        (args.out / "distributions.md").write_text(
            f"# a* distributions of the firewall's pairs ({args.patients} phantom patients, "
            f"{args.size} px)\n\nWritten by `python benchmarks/distributions.py --out docs`; "
            f"mean ± std over the patients; whole images, and inside the patient's face outline.\n\n"
            f"{markdown(table)}\n\n"
            f"![pooled a* histograms](generated/distributions.png)\n")
        save_figure(histogram_figure(pooled, bins=90, range=(-5.0, 40.0),
                                     title=f"a* inside the face, {args.patients} phantom patients"),
                    args.out / "generated" / "distributions.png")
    print(json.dumps(table) if args.json else markdown(table))
    print(f"paper: {PAPER}", file=sys.stderr)


if __name__ == "__main__":
    main()
