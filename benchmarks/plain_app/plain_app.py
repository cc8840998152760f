"""The plain Flower PyTorch baseline: quickstart-style ClientApp and FedAvg ServerApp."""

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from deid_client.task.segmentation import build_unet, score, train_epochs

client = ClientApp()
server = ServerApp()


def _load(context: Context, split: str):
    part = int(context.node_config["partition-id"])
    with np.load(Path(str(context.run_config["arrays-dir"])) / f"node{part}.npz") as arrays:
        return arrays[f"{split}_images"], arrays[f"{split}_masks"]


def _model(msg: Message, context: Context):
    model = build_unet(str(context.run_config["encoder"]), int(context.run_config["encoder-depth"]))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return model


@client.train()
def train(msg: Message, context: Context) -> Message:
    cfg = context.run_config
    images, masks = _load(context, "train")
    model = _model(msg, context)
    start = time.perf_counter()
    loss = train_epochs(model, images, masks, epochs=int(cfg["local-epochs"]),
                        batch_size=int(cfg["batch-size"]), lr=float(msg.content["config"]["lr"]))
    metrics = MetricRecord({"train_loss": loss, "num-examples": len(images),
                            "time_train_s": time.perf_counter() - start})
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}),
                   reply_to=msg)


@client.evaluate()
def evaluate_global(msg: Message, context: Context) -> Message:
    images, masks = _load(context, "eval")
    scores = score(_model(msg, context), images, masks)
    metrics = MetricRecord({f"eval_{k}": v for k, v in scores.items()} | {"num-examples": len(images)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    model = build_unet(str(cfg["encoder"]), int(cfg["encoder-depth"]))
    ends: dict[int, float] = {}

    def mark(server_round: int, arrays: ArrayRecord) -> None:
        ends[server_round] = time.perf_counter()

    result = FedAvg().start(
        grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=int(cfg["num-server-rounds"]), train_config=ConfigRecord({"lr": float(cfg["lr"])}),
        evaluate_fn=mark)
    rounds = [{"round": r, "round_seconds": ends[r] - ends[r - 1],
               "time_train_s": float(result.train_metrics_clientapp[r]["time_train_s"])}
              for r in sorted(ends) if r - 1 in ends]
    (Path(str(cfg["output-dir"])) / "plain.json").write_text(json.dumps(rounds, indent=2))
