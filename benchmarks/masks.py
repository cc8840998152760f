"""Timings of the differential mask and of threshold calibration.

Each figure is printed next to a straightforward reference implementation
timed in the same run:

* difference map + mask at 1024 x 768: ours (OpenCV float CIELAB, a* only)
  vs scikit-image ``rgb2lab`` on both images, then subtract and threshold;
* calibration of 100 images x 256 thresholds: ours (one pass per image)
  vs re-thresholding every image for every candidate.

Usage: python benchmarks/masks.py [--repeats 5] [--images 100] [--side 256] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from skimage import color

from deid_client.firewall.masks import calibrate_threshold, erythema_map, threshold_mask
from deid_client.metrics import iou
from deid_client.phantom import make_phantom


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def reference_mask(pathological, healthy, theta):
    diff = color.rgb2lab(pathological)[..., 1] - color.rgb2lab(healthy)[..., 1]
    return diff > theta


def reference_calibration(diffs, refs, thresholds):
    best = (None, -1.0)
    for theta in np.sort(thresholds):
        score = np.mean([iou(threshold_mask(d, theta), r) for d, r in zip(diffs, refs)])
        if score > best[1]:
            best = (float(theta), float(score))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--side", type=int, default=256, help="calibration image side, px")
    parser.add_argument("--thresholds", type=int, default=256)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    # A 1024 x 768 photo pair: a phantom at 1024 px, cropped to landscape.
    phantom = make_phantom(0, 1024)
    sick, healthy = phantom.image[128:896], phantom.twin[128:896]
    theta = 5.0
    ours_s, ours = timed(lambda: threshold_mask(erythema_map(sick, healthy), theta), args.repeats)
    ref_s, ref = timed(lambda: reference_mask(sick, healthy, theta), args.repeats)

    # Calibration cohort: phantom-like difference maps with known lesions.
    rng = np.random.default_rng(0)
    diffs, refs = [], []
    yy, xx = np.mgrid[: args.side, : args.side]
    for _ in range(args.images):
        cy, cx = rng.uniform(0.3, 0.7, 2) * args.side
        r = rng.uniform(0.08, 0.2) * args.side
        lesion = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        diff = np.where(lesion, rng.normal(12, 3, lesion.shape), rng.normal(0, 1.5, lesion.shape))
        diffs.append(diff.astype(np.float32))
        refs.append(lesion)
    thresholds = np.linspace(0, 20, args.thresholds, dtype=np.float32)
    cal_s, cal = timed(lambda: calibrate_threshold(diffs, refs, thresholds=thresholds),
                       args.repeats)
    cal_ref_s, cal_ref = timed(lambda: reference_calibration(diffs, refs, thresholds), 1)

    result = {
        "mask_1024x768_s": ours_s,
        "mask_1024x768_reference_s": ref_s,
        "mask_speedup": ref_s / ours_s,
        "mask_agreement_iou": iou(ours, ref),
        "calibration_images": args.images,
        "calibration_side_px": args.side,
        "calibration_thresholds": args.thresholds,
        "calibration_s": cal_s,
        "calibration_reference_s": cal_ref_s,
        "calibration_speedup": cal_ref_s / cal_s,
        "calibration_same_theta": cal[0] == cal_ref[0],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"difference map + mask, 1024x768: {ours_s * 1e3:8.1f} ms   reference (skimage "
          f"rgb2lab): {ref_s * 1e3:8.1f} ms   speed-up x{result['mask_speedup']:.1f}   "
          f"mask IoU vs reference {result['mask_agreement_iou']:.4f}")
    print(f"calibration, {args.images} images {args.side}x{args.side} x {args.thresholds} "
          f"thresholds: {cal_s * 1e3:8.1f} ms   reference (re-threshold loop): "
          f"{cal_ref_s * 1e3:8.1f} ms   speed-up x{result['calibration_speedup']:.1f}   "
          f"same theta*: {result['calibration_same_theta']}")


if __name__ == "__main__":
    main()
