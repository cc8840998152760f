"""The centralised reference: one U-Net trained on every site's training data pooled.

It answers "what would the same trainer reach if the data could be pooled?", the
upper line of the federated study (``simulations.study``). It uses the same node data
(``deid_client.task.data``, the same mask source and cache), the same trainer and lr
schedule, and the same held-out originals, scored the way the server averages them
(every held-out photo counts once). A "round" here is ``local_epochs`` epochs over the
pooled data, so its curve lines up with the federated ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deid_client.task.settings import node_settings
from deid_client.task.data import load_node_data
from deid_client.task.segmentation import build_unet, round_lr, score, train_epochs

__all__ = ["train_centralised"]


def train_centralised(run_config: dict, *, num_sites: int, cache_dir: str | Path) -> list[dict]:
    """Pool ``num_sites`` sites' data (run-config keys, as the ClientApp reads them), train
    one model for ``num-server-rounds`` rounds, and write ``history.json`` into
    ``run_config["output-dir"]``; returns its rounds."""
    cfg = run_config
    sites = [load_node_data(node_settings(cfg, {"partition-id": p, "num-partitions": num_sites}).data,
                            cache_dir) for p in range(num_sites)]
    images = np.concatenate([s.train_images for s in sites])
    masks = np.concatenate([s.train_masks for s in sites])
    held_images = np.concatenate([s.eval_images for s in sites])
    held_masks = np.concatenate([s.eval_masks for s in sites])
    model = build_unet(str(cfg["encoder"]), int(cfg["encoder-depth"]), seed=int(cfg["seed"]))
    rounds = int(cfg["num-server-rounds"])
    history = []
    for server_round in range(1, rounds + 1):
        loss = train_epochs(model, images, masks, epochs=int(cfg["local-epochs"]),
                            batch_size=int(cfg["batch-size"]), seed=server_round,
                            lr=round_lr(float(cfg["lr"]), server_round, rounds))
        scores = score(model, held_images, held_masks)
        print(f"centralised round {server_round}/{rounds}: train_loss {loss:.4f}  "
              f"eval_dice {scores['dice']:.4f}", flush=True)
        history.append({"round": server_round, "status": "ok", "train_loss": loss,
                        "eval_loss": scores["loss"], "eval_dice": scores["dice"],
                        "eval_iou": scores["iou"], "num-examples": len(held_images)})
    out = Path(cfg["output-dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps({"rounds": history, "centralised": True}, indent=2))
    return history
