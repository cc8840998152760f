"""The Flower ClientApp: local data through the firewall, a U-Net trained on it.

Only model arrays and scalar metrics leave (``server.contract``), clipped and noised on
the site when the run's ``dp`` is ``local`` (``deid_client.task.dp``). The run config and
the node config are read once, in ``deid_client.task.settings``.
"""

from __future__ import annotations

import time

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from deid_client.task.data import NodeData, load_node_data
from deid_client.task.dp import dp_mod
from deid_client.task.segmentation import round_lr, score, train_epochs, unet_for
from deid_client.task.settings import node_settings, remembered_data_key, run_settings

app = ClientApp()


def _node_data(context: Context) -> NodeData:
    node = node_settings(context.run_config, context.node_config)
    return load_node_data(node.data, node.cache_dir, key=remembered_data_key(context, node.data))


def _model(msg: Message, context: Context) -> torch.nn.Module:
    model = unet_for(run_settings(context.run_config).unet)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return model


@app.train(mods=[dp_mod])  # the run's differential privacy, on what this function returns
def train(msg: Message, context: Context) -> Message:
    start = time.perf_counter()
    data = _node_data(context)
    data_seconds = time.perf_counter() - start
    model = _model(msg, context)
    config = msg.content["config"]
    local = run_settings(context.run_config).train
    server_round = int(config["rounds-done"]) + int(config["server-round"])
    start = time.perf_counter()
    loss = train_epochs(
        model, data.train_images, data.train_masks,
        epochs=local.local_epochs, batch_size=local.batch_size,
        lr=round_lr(float(config["lr"]), server_round, int(config["num-server-rounds"])),
        device=node_settings(context.run_config, context.node_config).device, seed=server_round,
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
                       device=node_settings(context.run_config, context.node_config).device)
    else:  # no reference masks here: no score, and no weight in the average (server.strategy)
        scores = {"loss": 0.0, "dice": 0.0, "iou": 0.0}
    metrics = MetricRecord({f"eval_{k}": v for k, v in scores.items()}
                           | {"num-examples": len(data.eval_images)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
