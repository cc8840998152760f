"""The Flower ClientApp: local data through the firewall, a U-Net trained on it.

Only model arrays and scalar metrics leave (``server.contract``), clipped and noised on
the site when the run's ``dp`` is ``local`` (``deid_client.task.privacy``).
"""

from __future__ import annotations

import time

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from deid_client.task.data import data_config, default_cache_dir, load_node_data
from deid_client.task.privacy import dp_mod
from deid_client.task.segmentation import round_lr, score, train_epochs, unet_for

app = ClientApp()


def _node_data(context: Context):
    node = context.node_config
    return load_node_data(data_config(context.run_config, node),
                          node.get("cache-dir") or default_cache_dir())


def _model(msg: Message, context: Context) -> torch.nn.Module:
    model = unet_for(context.run_config)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return model


def _train_device(context: Context) -> str:
    return str(context.node_config.get("device") or "cpu")


@app.train(mods=[dp_mod])  # the run's differential privacy, on what this function returns
def train(msg: Message, context: Context) -> Message:
    start = time.perf_counter()
    data = _node_data(context)
    data_seconds = time.perf_counter() - start
    model = _model(msg, context)
    config = msg.content["config"]
    run = context.run_config
    server_round = int(config["rounds-done"]) + int(config["server-round"])
    start = time.perf_counter()
    loss = train_epochs(
        model, data.train_images, data.train_masks,
        epochs=int(run["local-epochs"]), batch_size=int(run["batch-size"]),
        lr=round_lr(float(config["lr"]), server_round, int(config["num-server-rounds"])),
        device=_train_device(context), seed=server_round,
        proximal_mu=float(config.get("proximal-mu", 0.0)))
    metrics = MetricRecord({"train_loss": loss, "num-examples": len(data.train_images),
                            "time_data_s": data_seconds,
                            "time_train_s": time.perf_counter() - start})
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}),
                   reply_to=msg)


@app.evaluate()
def evaluate_global(msg: Message, context: Context) -> Message:
    data = _node_data(context)
    if len(data.eval_images):
        scores = score(_model(msg, context), data.eval_images, data.eval_masks,
                          device=_train_device(context))
    else:  # no reference masks here: no score, and no weight in the average (server.strategy)
        scores = {"loss": 0.0, "dice": 0.0, "iou": 0.0}
    metrics = MetricRecord({f"eval_{k}": v for k, v in scores.items()}
                           | {"num-examples": len(data.eval_images)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
