"""Firewall throughput: photos per second, batched against the one-photo loop, same run.

    python benchmarks/firewall.py --json              # one JSON object
    python benchmarks/firewall.py --photos 8 --skip-main-job
    python benchmarks/firewall.py identity.steps=10 identity.n_max=10   # firewall config overrides
    python benchmarks/firewall.py --baseline identity.steps=28 --baseline identity.n_max=28
        # also the one-photo loop with other settings (here: the identity edit before 0.2)

Both sides make surrogates, twins and masks of the same phantom photos (the main job's
first hospital) with the settings of ``deid_client/firewall/conf/firewall.yaml``:

- ``single``: ``Firewall.synthesise`` one photo a call, the loop the firewall ran before it
  was batched;
- ``batched``: ``Firewall.synthesise`` with the configured ``batch_size`` (``--batch-size``
  overrides it).

``--baseline KEY=VALUE`` adds a third side, ``single_baseline``: the one-photo loop with
those overrides on top (``speedup_vs_baseline`` = its time / the batched time).
They take turns (``--repeats`` rounds, best of each kept), since a shared machine's speed
drifts, and their results are compared (``max_difference``, intensity levels). A hook on
the transformer counts its calls and rows and the time spent inside it: on a CPU the
phantom model is arithmetic-bound, so ``ms_per_row`` (one guided evaluation of one image)
says what batching can and cannot buy. ``seconds_main_job_preparation`` prepares the main
job's nodes (``conf/data/phantom.yaml``, 2 hospitals, ``mask_source=surrogate``, no cache)
as the simulation does: both at once, each in its own process with one CPU thread (Ray
gives each simulated ClientApp one CPU), with the shipped ``deid_client/firewall/conf/firewall.yaml``
(skipped when overrides are given).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

import _repo  # noqa: F401  (simulations/ from the checkout)
from deid_client.editing.backends import load_backend
from deid_client.firewall.config import compose_firewall
from deid_client.task.data import DataConfig, phantom_samples, load_node_data
from deid_client.task.settings import node_settings
from simulations.defaults import app_defaults
from deid_client.firewall import Firewall


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class TransformerTime:
    """Calls, rows and seconds inside the backend's transformer."""

    def __init__(self, transformer: torch.nn.Module):
        self.calls = self.rows = 0
        self.seconds = 0.0
        self._start = 0.0
        self._hooks = [transformer.register_forward_pre_hook(self._before),
                       transformer.register_forward_hook(self._after, with_kwargs=True)]

    def _before(self, module, args):
        self._start = time.perf_counter()

    def _after(self, module, args, kwargs, output):
        self.seconds += time.perf_counter() - self._start
        self.calls += 1
        self.rows += kwargs["hidden_states"].shape[0]

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()


def main_job_data(**changes) -> DataConfig:
    """The main job's data settings (the run config's defaults) for one of its 2 hospitals."""
    return dataclasses.replace(node_settings(app_defaults(), {"num-partitions": 2}).data, **changes)


def prepare_node(partition: int) -> dict:
    """One main-job node's data, as its ClientApp prepares it (no cache); its photos and seconds."""
    started = time.perf_counter()
    data = load_node_data(main_job_data(mask_source="surrogate", partition_id=partition), None)
    return {"partition": partition, "training_pairs": len(data.train_images),  # K per released photo
            "seconds": time.perf_counter() - started}


def timed(label: str, backend, run) -> tuple[float, dict, list]:
    probe = TransformerTime(backend.pipe.transformer)
    started = time.perf_counter()
    try:
        results = run()
    finally:
        probe.close()
    seconds = time.perf_counter() - started
    _log(f"  {label}: {seconds:.1f} s, {probe.calls} transformer calls, {probe.rows} rows")
    return seconds, {"transformer_calls": probe.calls, "transformer_rows": probe.rows,
                     "transformer_share": probe.seconds / seconds,
                     "ms_per_row": 1000 * probe.seconds / max(1, probe.rows)}, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--batch-size", type=int, help="photos per call (default: the config's)")
    parser.add_argument("--repeats", type=int, default=2, help="turns of each side; best kept")
    parser.add_argument("--baseline", action="append", default=[], metavar="KEY=VALUE",
                        help="also time the one-photo loop with these overrides on top")
    parser.add_argument("--skip-main-job", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("overrides", nargs="*", help="deid_client/firewall/conf/firewall.yaml overrides")
    args = parser.parse_args()

    cfg = compose_firewall(args.overrides)
    firewall = Firewall(cfg, load_backend(cfg.model))
    backend = firewall.backend
    data = main_job_data(mask_source="surrogate")
    samples = phantom_samples(data)[:args.photos]
    rng = np.random.default_rng(0)
    photos = [s.image for s in samples]
    known = [s.attributes for s in samples]
    targets = [cfg.prompts.draw_targets(a, 1, rng, min_change=cfg.min_change)[0] for a in known]
    batch_size = args.batch_size or firewall.photos_per_call()
    firewall.synthesise(photos[:2], targets[:2], known[:2], batch_size=2)  # warm-up

    def one_by_one(firewall):
        return lambda: firewall.synthesise(photos, targets, known, batch_size=1)

    runs = {"single": one_by_one(firewall),
            "batched": lambda: firewall.synthesise(photos, targets, known, batch_size=batch_size)}
    if args.baseline:  # the same photos and targets, other settings, the same model
        runs["single_baseline"] = one_by_one(Firewall(compose_firewall([*args.overrides, *args.baseline]),
                                                      backend))
    best = {side: (float("inf"), {}) for side in runs}
    outputs = {}
    for turn in range(args.repeats):
        _log(f"turn {turn + 1}/{args.repeats} on {len(photos)} photos, batch size {batch_size}")
        for side, run in runs.items():
            seconds, probe, outputs[side] = timed(side, backend, run)
            if seconds < best[side][0]:
                best[side] = (seconds, probe)
    difference = max(int(np.abs(a.surrogate.astype(int) - b.surrogate).max()) for a, b in
                     zip(outputs["single"], outputs["batched"]))
    single, batched = best["single"][0], best["batched"][0]
    result = {
        "photos": len(photos),
        "batch_size": batch_size,
        "photos_per_second_single": len(photos) / single,
        "photos_per_second_batched": len(photos) / batched,
        "speedup": single / batched,
        "seconds_per_photo_single": single / len(photos),
        "seconds_per_photo_batched": batched / len(photos),
        "single": best["single"][1],
        "batched": best["batched"][1],
        "max_difference": difference,  # intensity levels, surrogates alone vs in a batch
        "torch_threads": torch.get_num_threads(),
        "device": str(backend.execution_device),
        "identity_edit": {k: v for k, v in vars(cfg.identity).items() if "prompt" not in k},
        "twin_from": cfg.twin_from,
        "overrides": args.overrides,
    }
    if args.baseline:
        result |= {"baseline": args.baseline,
                   "photos_per_second_single_baseline": len(photos) / best["single_baseline"][0],
                   "speedup_vs_baseline": best["single_baseline"][0] / batched,
                   "single_baseline": best["single_baseline"][1]}
    if not args.skip_main_job and not args.overrides:  # the nodes read the shipped config as it is
        _log("main job preparation: 2 hospitals at once, one thread each, mask_source=surrogate")
        started = time.perf_counter()
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(2, mp_context=spawn, initializer=torch.set_num_threads,
                                 initargs=(1,)) as pool:
            nodes = list(pool.map(prepare_node, range(2)))
        result["seconds_main_job_preparation"] = time.perf_counter() - started
        result["main_job_nodes"] = nodes
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32s} {value}")


if __name__ == "__main__":
    main()
