"""Per-round wall time of our federated app against a plain Flower PyTorch app.

Both train the same U-Net on the same arrays and evaluate it on the same
held-out arrays every round, on Flower's simulation engine, in this one run.
Ours adds the node's data preparation (first round only, then cached), the
privacy guard, checkpoints and history. Printed per round: total, data
preparation, local training and everything else, and the ratio of our round
time to the baseline's.

    python benchmarks/federated.py [--rounds 3] [--clients 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import _repo  # noqa: F401  (research/ and simulations/ from the checkout)
from deid_client.task.data import load_node_data
from deid_client.task.settings import node_settings
from simulations.defaults import app_defaults
from simulations.engine import run_simulation

PLAIN_APP = Path(__file__).resolve().parent / "plain_app"
SHARED = {"local-epochs": 2, "batch-size": 8, "lr": 0.002, "encoder": "resnet18",
          "encoder-depth": 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--images-per-client", type=int, default=48)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fedbench-") as tmp:
        tmp = Path(tmp)
        data = {"images-per-client": args.images_per_client, "image-size": args.image_size}
        # Ours, starting from a cold node cache.
        code = run_simulation({"num-server-rounds": args.rounds, "output-dir": str(tmp / "ours"),
                               "min-nodes": args.clients, **SHARED, **data},
                              num_supernodes=args.clients, cache_dir=tmp / "cache", workdir=tmp,
                              stream=(tmp / "ours.log").open("w"))
        if code != 0:
            raise SystemExit(f"our simulation failed; see {tmp / 'ours.log'}")
        ours = json.loads((tmp / "ours" / "history.json").read_text())["rounds"]

        # The baseline trains on exactly the arrays our nodes prepared.
        arrays = tmp / "arrays"
        arrays.mkdir()
        for part in range(args.clients):
            run = {**app_defaults(), **SHARED, **data}
            node = load_node_data(node_settings(run, {"partition-id": part,
                                                      "num-partitions": args.clients}).data, tmp / "cache")
            np.savez(arrays / f"node{part}.npz", train_images=node.train_images,
                     train_masks=node.train_masks, eval_images=node.eval_images,
                     eval_masks=node.eval_masks)
        (tmp / "plain").mkdir()
        code = run_simulation({"num-server-rounds": args.rounds, "arrays-dir": str(arrays),
                               "output-dir": str(tmp / "plain"), **SHARED},
                              num_supernodes=args.clients, app_dir=PLAIN_APP, workdir=tmp,
                              stream=(tmp / "plain.log").open("w"))
        if code != 0:
            raise SystemExit(f"baseline simulation failed; see {tmp / 'plain.log'}")
        plain = {r["round"]: r for r in json.loads((tmp / "plain" / "plain.json").read_text())}

    rows = []
    for entry in ours:
        r = entry["round"]
        if "round_seconds" not in entry or r not in plain:
            continue
        total, data_s, train_s = entry["round_seconds"], entry["time_data_s"], entry["time_train_s"]
        rows.append({"round": r, "ours_s": total, "data_prep_s": data_s, "local_train_s": train_s,
                     "other_s": total - data_s - train_s, "plain_s": plain[r]["round_seconds"],
                     "plain_train_s": plain[r]["time_train_s"],
                     "ratio": total / plain[r]["round_seconds"]})
    warm = [row["ratio"] for row in rows if row["round"] > 1]
    summary = {"rounds": rows, "ratio_warm_cache_mean": float(np.mean(warm)) if warm else None}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{'round':>5} {'ours s':>8} {'data prep':>9} {'train':>7} {'other':>7} "
          f"{'plain s':>8} {'plain train':>11} {'ratio':>6}")
    for row in rows:
        print(f"{row['round']:>5} {row['ours_s']:>8.2f} {row['data_prep_s']:>9.2f} "
              f"{row['local_train_s']:>7.2f} {row['other_s']:>7.2f} {row['plain_s']:>8.2f} "
              f"{row['plain_train_s']:>11.2f} {row['ratio']:>6.2f}")
    if warm:
        print(f"warm-cache rounds: ours / plain = {summary['ratio_warm_cache_mean']:.3f}")
    print("(data prep and train are per-client means, as FedAvg aggregates them; "
          "clients train in parallel, one core each)")


if __name__ == "__main__":
    main()
