"""``deid-client``: the command line of the local privacy firewall.

User mistakes (missing files, bad images, bad options) end in one line on
stderr and a non-zero exit; batches report bad files and finish the good ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


from deid_client import __version__
from deid_client.io.files import USER_ERRORS, FileReport, each_file
from deid_client.io.images import IMAGE_SUFFIXES, atomic_write_bytes

EXIT_USAGE, EXIT_PARTIAL = 2, 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # KEY=VALUE overrides may come after the options too
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    try:
        return args.run(args)
    except USER_ERRORS as exc:
        print(f"deid-client: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("deid-client: interrupted; finished files are kept", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deid-client", description="Local privacy firewall for federated dermatology.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("phantom", help="write a phantom cohort (images, healthy twins, masks)")
    p.add_argument("-o", "--output", type=Path, required=True, help="cohort folder")
    p.add_argument("-n", "--images", type=_positive, default=200)
    p.add_argument("--hospitals", type=_positive, default=1)
    p.add_argument("--size", type=int, default=256, help="side in pixels, 64..1024")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--non-iid", type=float, default=0.5, help="0 = alike sites .. 1 = very unlike")
    p.add_argument("--no-distractors", action="store_true",
                   help="no jewellery, flush, strong shadows or shine")
    p.set_defaults(run=_phantom)

    p = sub.add_parser("mask", help="differential erythema mask of one image pair")
    p.add_argument("pathological", type=Path)
    p.add_argument("twin", type=Path, help="the same image without the condition (its healthy twin)")
    p.add_argument("-o", "--output", type=Path, required=True, help="mask PNG to write")
    p.add_argument("--theta", type=float,
                   help="a* threshold (default: the firewall config's theta; calibrate finds one)")
    p.add_argument("--min-size", type=int, default=0, help="drop components up to this many px")
    p.add_argument("--max-hole-size", type=int, default=0, help="fill holes up to this many px")
    p.add_argument("--overlay", type=Path, help="also write the mask over the image (PNG)")
    p.add_argument("--heatmap", type=Path, help="also write the a* difference heat map (PNG)")
    p.set_defaults(run=_mask)

    p = sub.add_parser("edit", help="FlowEdit one image with an SD3 / FLUX.1 pipeline")
    p.add_argument("image", type=Path)
    p.add_argument("--model", required=True,
                   help="pipeline folder, or a Hugging Face id already in the local cache")
    p.add_argument("--source-prompt", required=True, help="describes the input photo")
    p.add_argument("--target-prompt", required=True, help="describes the wanted result")
    p.add_argument("-o", "--output", type=Path, required=True, help="edited image (.png/.jpg)")
    p.add_argument("--seed", type=int, help="run seed (default 0); mixed with the image's key")
    for flag, kind, what in (("--steps", int, "T, schedule length"),
                             ("--n-max", int, "editing starts at step T - n_max"),
                             ("--n-min", int, "last n_min steps sample the target plainly"),
                             ("--n-avg", int, "noise samples averaged per step"),
                             ("--gamma-src", float, "source guidance"),
                             ("--gamma-tgt", float, "target guidance"),
                             ("--max-side", int, "longest side the model works at")):
        p.add_argument(flag, type=kind, help=f"{what} (default: the model family's)")
    p.add_argument("--device", help="cuda, cuda:1, cpu... (default: cuda if available)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="default: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--cpu-offload", action="store_true", help="for GPUs with little memory")
    p.add_argument("--max-sequence-length", type=int, default=256, help="T5 tokens per prompt")
    p.add_argument("--allow-download", action="store_true",
                   help="let diffusers fetch a missing model from the Hugging Face Hub")
    p.set_defaults(run=_edit)

    p = sub.add_parser("calibrate", help="find theta* against reference masks")
    p.add_argument("folders", type=Path, nargs="*", metavar="DIR",
                   help="PATHOLOGICAL_DIR HEALTHY_DIR REFERENCE_DIR (files matched by name)")
    p.add_argument("--cohort", type=Path, help="a phantom cohort folder instead of three folders")
    p.add_argument("--objective", choices=("mean", "pooled"), default="mean")
    p.add_argument("--thresholds", type=_positive, default=256, help="number of candidates")
    p.add_argument("-o", "--output", type=Path, help="also write the JSON here")
    p.set_defaults(run=_calibrate)

    p = sub.add_parser("ingest", help="sanitise photos: metadata-free, pseudonymous PNGs")
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--secret-file", type=Path,
                   help="site secret (created if missing); else $DEID_SITE_SECRET")
    p.add_argument("--recursive", action="store_true")
    p.set_defaults(run=_ingest)

    p = sub.add_parser("firewall", help="a hospital's photos -> surrogates, healthy twins, masks",
                       description="Every photo of DATA_DIR/images/ (or DATA_DIR) through the firewall: "
                       "OUT_DIR/surrogates/, healthy/ and masks/ under pseudonymous names, "
                       "manifest.json, contact_sheet.png. A rerun resumes.")
    p.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR")
    p.add_argument("--model", help="phantom, a diffusers folder, or a Hugging Face id already in the "
                   "local cache (default: the preset's)")
    p.add_argument("--device", help="cuda, cuda:1, cpu... (default: the model config's)")
    p.add_argument("--secret-file", type=Path,
                   help="site secret for the names (created if missing); else $DEID_SITE_SECRET")
    p.add_argument("--config", type=Path, help="the site's own firewall YAML (any subset of the keys)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="firewall config overrides, e.g. theta=4.0 identity.n_max=5 preset=sd35_medium")
    p.set_defaults(run=_firewall)

    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _print_json(data: dict, output: Path | None = None) -> None:
    text = json.dumps(data, indent=2)
    print(text)
    if output is not None:
        atomic_write_bytes(output, text.encode() + b"\n")


def _report_errors(report: FileReport, what: str) -> int:
    for _, error in report.errors:
        print(f"deid-client: skipped: {error}", file=sys.stderr)
    done, failed = len(report.results), len(report.errors)
    print(f"{what}: {done} done, {failed} failed", file=sys.stderr)
    return EXIT_PARTIAL if failed else 0


def _phantom(args) -> int:
    from deid_client.phantom import MAX_SIZE, MIN_SIZE, plan_cohort, write_cohort

    if not MIN_SIZE <= args.size <= MAX_SIZE:
        raise ValueError(f"--size must be {MIN_SIZE}..{MAX_SIZE}, not {args.size}")
    cases = plan_cohort(args.images, args.hospitals, seed=args.seed, non_iid=args.non_iid)
    report = write_cohort(cases, args.output, size=args.size, distractors=not args.no_distractors)
    print(f"wrote {len(report.results)} phantoms to {args.output} "
          f"({args.output / 'manifest.json'})")
    return _report_errors(report, "phantoms")


def _mask(args) -> int:
    from deid_client.figures import heatmap_figure, mask_overlay, save_figure
    from deid_client.io.images import read_image, write_image, write_mask
    from deid_client.firewall.masks import clean_mask, erythema_map, threshold_mask

    if args.theta is None:
        from deid_client.firewall.config import compose_firewall

        args.theta = compose_firewall().theta
    pathological, twin = read_image(args.pathological), read_image(args.twin)
    diff = erythema_map(pathological, twin)
    mask = clean_mask(threshold_mask(diff, args.theta), min_size=args.min_size,
                      max_hole_size=args.max_hole_size)
    write_mask(args.output, mask)
    if args.overlay:
        write_image(args.overlay, mask_overlay(pathological, mask))
    if args.heatmap:
        save_figure(heatmap_figure(diff, theta=args.theta), args.heatmap)
    _print_json({"theta": args.theta, "lesion_fraction": float(mask.mean()),
                 "lesion_pixels": int(mask.sum()), "mask": str(args.output)})
    return 0


def _edit(args) -> int:
    import time
    from dataclasses import asdict

    from deid_client.editing.backends import ModelConfig, load_backend
    from deid_client.firewall.config import published_edit
    from deid_client.io.images import read_image, write_image

    _quiet_libraries()
    image = read_image(args.image)  # fail fast on a bad input, before loading gigabytes
    if args.output.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"{args.output}: output must end in .png, .jpg or .jpeg")
    backend = load_backend(ModelConfig(args.model, device=args.device, dtype=args.dtype,
                                       cpu_offload=args.cpu_offload, allow_download=args.allow_download,
                                       max_sequence_length=args.max_sequence_length))
    settings = published_edit(
        backend.family, args.source_prompt, args.target_prompt, seed=args.seed, steps=args.steps,
        n_max=args.n_max, n_min=args.n_min, n_avg=args.n_avg, gamma_src=args.gamma_src,
        gamma_tgt=args.gamma_tgt, max_side=args.max_side)
    start = time.perf_counter()
    edited = backend.edit(image, settings, progress=True)
    seconds = time.perf_counter() - start
    write_image(args.output, edited)
    _print_json({"output": str(args.output), "family": backend.family,
                 "seconds": round(seconds, 3), "settings": asdict(settings)})
    return 0


def _calibrate(args) -> int:
    from deid_client.firewall.masks import (calibrate_threshold, candidate_thresholds, erythema_map,
                                            per_image_iou)
    from deid_client.io.pairs import load_triple, triples_from_cohort, triples_from_folders

    def difference(triple):
        pathological, twin, reference = load_triple(triple)
        return erythema_map(pathological, twin), reference

    if args.cohort is not None and args.folders:
        raise ValueError("give either --cohort or three folders, not both")
    if args.cohort is not None:
        triples, unmatched = triples_from_cohort(args.cohort), []
    elif len(args.folders) == 3:
        triples, unmatched = triples_from_folders(*args.folders)
    else:
        raise ValueError("give PATHOLOGICAL_DIR HEALTHY_DIR REFERENCE_DIR, or --cohort DIR")
    report = each_file(triples, difference, desc="difference maps")
    report.errors[:0] = unmatched
    if not report.results:
        _report_errors(report, "pairs")
        raise ValueError("no usable image pairs to calibrate on")
    keys = [t.key for t, _ in report.results]
    diffs = [d for _, (d, _) in report.results]
    refs = [r for _, (_, r) in report.results]
    thresholds = candidate_thresholds(diffs, args.thresholds)
    theta, score = calibrate_threshold(diffs, refs, objective=args.objective, thresholds=thresholds)
    per_image = per_image_iou(diffs, refs, theta)
    _print_json({"theta": theta, "iou": score, "objective": args.objective,
                 "images": len(keys), "failed": len(report.errors),
                 "per_image_iou": dict(zip(keys, per_image, strict=True))}, args.output)
    return _report_errors(report, "pairs")


def _ingest(args) -> int:
    from deid_client.io.ingest import ingest_folder
    from deid_client.io.pseudonyms import load_site_secret

    if not args.input.is_dir():
        raise ValueError(f"{args.input}: not a folder")
    secret = load_site_secret(args.secret_file, create=True)
    report = ingest_folder(args.input, args.output, secret, recursive=args.recursive)
    print(f"wrote {len(report.results)} sanitised images to {args.output}")
    return _report_errors(report, "ingest")


def _firewall(args) -> int:
    from deid_client.editing.backends import load_backend
    from deid_client.firewall import Firewall, compose_firewall, folder_photos, run_folder
    from deid_client.firewall.folder import not_photos
    from deid_client.io.pseudonyms import load_site_secret

    if not args.data_dir.is_dir():
        raise ValueError(f"{args.data_dir}: not a folder")
    data_dir, out = args.data_dir.resolve(), args.output.resolve()
    if out == data_dir or out in data_dir.parents:
        # its masks/ would land among the site's own, where a node reads reference masks
        raise ValueError(f"-o {args.output}: the output folder must not be the photo folder "
                         f"{args.data_dir} or hold it; choose a folder of its own")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise ValueError(f"{bad[0]!r}: overrides are KEY=VALUE (e.g. theta=4.0)")
    overrides = list(args.overrides)
    overrides += [f"model.id={args.model}"] if args.model else []
    overrides += [f"model.device={args.device}"] if args.device else []
    cfg = compose_firewall(overrides, args.config)
    secret = load_site_secret(args.secret_file, create=True)
    photos = folder_photos(args.data_dir)
    others = not_photos(args.data_dir)
    if others:
        print(f"firewall: {sum(others.values())} files not taken as photos "
              f"({', '.join(f'{n} {s}' for s, n in sorted(others.items()))}); photos are "
              f"{', '.join(IMAGE_SUFFIXES)}", file=sys.stderr)
    if not photos:
        raise ValueError(f"{args.data_dir}: no photos ({', '.join(IMAGE_SUFFIXES)})")
    _quiet_libraries()
    report = run_folder(Firewall(cfg, load_backend(cfg.model)), photos, args.output, secret=secret)
    for label, error in report.errors:
        print(f"deid-client: skipped: {error if error.startswith(label) else f'{label}: {error}'}",
              file=sys.stderr)
    print(f"firewall: {len(report.released)} released, {len(report.refused)} refused by the identity "
          f"gate ({report.reused} done by an earlier run), {len(report.errors)} failed -> "
          f"{args.output} (manifest.json, contact_sheet.png)", file=sys.stderr)
    return EXIT_PARTIAL if report.errors else 0


def _quiet_libraries() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()  # loading a pipeline is not the work
    transformers_logging.set_verbosity_error()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
