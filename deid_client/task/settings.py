"""The settings of a run and of a node, read once, at the edge.

Flower hands the ClientApp and the ServerApp two dicts: the run config
(``[tool.flwr.app.config]`` in ``pyproject.toml``, the one home of every default,
overridden per run) and a node's node config. This module is the only place that reads
them: ``client_app.py`` and ``server/server_app.py`` turn them into the typed settings
below, and everything beneath takes typed arguments::

    run = run_settings(context.run_config)           # RunSettings: unet, train, dp, ...
    node = node_settings(context.run_config, context.node_config)   # data, device, cache
"""

from __future__ import annotations

import functools
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ConfigRecord, Context

from deid_client.task.data import DataConfig
from deid_client.task.dp import DpConfig
from deid_client.task.segmentation import TrainConfig, UNetConfig

__all__ = ["RunSettings", "NodeSettings", "run_settings", "node_settings", "remembered_data_key",
           "NODE_MODEL_KEYS", "CACHE_ENV"]

#: Node-config keys that choose the firewall's model on this site (each -> a firewall override).
NODE_MODEL_KEYS = {"model": "model.id", "device": "model.device", "dtype": "model.dtype",
                   "cpu-offload": "model.cpu_offload"}
#: Where a node caches its prepared data when its node config names no ``cache-dir``.
CACHE_ENV = "DEID_CACHE_DIR"
_STATE = "deid-client"  # this app's record in a node's Context.state

@dataclass(frozen=True)
class RunSettings:
    """The run config, typed: the federation's model, its local training and DP, the data
    settings every site shares, and what the server alone reads."""

    unet: UNetConfig
    train: TrainConfig
    dp: DpConfig
    data: dict  # DataConfig's run-config fields (a node adds its own: node_settings)
    firewall: tuple[str, ...]  # the federation-wide overrides of the firewall config
    num_server_rounds: int
    output_dir: str
    strategy: str
    min_nodes: int
    fraction_train: float
    proximal_mu: float
    max_failed_rounds: int
    seed: int


@dataclass(frozen=True)
class NodeSettings:
    """A node's data (its partition or folder, its firewall overrides), the device it
    trains on, and where it caches its prepared data."""

    data: DataConfig
    device: str
    cache_dir: Path


def run_settings(run_config: Mapping) -> RunSettings:
    """The typed :class:`RunSettings` of a run config (checked once per process)."""
    return _run_settings(tuple(sorted(run_config.items())))


@functools.cache
def _run_settings(items: tuple) -> RunSettings:
    run = dict(items)
    dp = DpConfig("off" if run["dp"] is False else str(run["dp"]),  # a TOML/YAML off may be False
                  noise=float(run["dp-noise"]), clipping_norm=float(run["dp-clipping-norm"]),
                  epsilon=float(run["dp-epsilon"]), delta=float(run["dp-delta"]))
    return RunSettings(
        unet=UNetConfig(str(run["encoder"]), int(run["encoder-depth"]), norm=dp.norm),
        train=TrainConfig(lr=float(run["lr"]), local_epochs=int(run["local-epochs"]),
                          batch_size=int(run["batch-size"])),
        dp=dp,
        data={"images_per_client": int(run["images-per-client"]), "image_size": int(run["image-size"]),
              "mask_source": str(run["mask-source"]), "non_iid": float(run["non-iid"]),
              "eval_fraction": float(run["eval-fraction"]), "seed": int(run["seed"])},
        firewall=tuple(shlex.split(str(run.get("firewall", "")))),
        num_server_rounds=int(run["num-server-rounds"]), output_dir=str(run["output-dir"]),
        strategy=str(run["strategy"]), min_nodes=int(run["min-nodes"]),
        fraction_train=float(run["fraction-train"]), proximal_mu=float(run["proximal-mu"]),
        max_failed_rounds=int(run["max-failed-rounds"]), seed=int(run["seed"]))


def node_settings(run_config: Mapping, node_config: Mapping) -> NodeSettings:
    """A node's :class:`NodeSettings`: federation-wide data settings from the run config,
    the site's own (where its photos are, its model, device and cache) from the node
    config, and ``$DEID_CACHE_DIR`` where the node config names no cache."""
    return _node_settings(tuple(sorted(run_config.items())), tuple(sorted(node_config.items())),
                          os.environ.get(CACHE_ENV, ""))


@functools.cache
def _node_settings(run_items: tuple, node_items: tuple, cache_env: str) -> NodeSettings:
    run, node = _run_settings(run_items), dict(node_items)
    firewall = list(run.firewall)
    firewall += [f"{override}={_value(node[key])}" for key, override in NODE_MODEL_KEYS.items()
                 if key in node and node[key] != ""]
    data = DataConfig(**run.data, partition_id=int(node.get("partition-id", 0)),
                      num_partitions=int(node.get("num-partitions", 1)),
                      data_dir=str(node.get("data-dir", "")), firewall=tuple(firewall),
                      firewall_config=str(node.get("firewall-config", "")))
    cache = node.get("cache-dir") or cache_env or Path.home() / ".cache" / "deid-client"
    return NodeSettings(data, device=str(node.get("device") or "cpu"), cache_dir=Path(cache))


def remembered_data_key(context: Context, data: DataConfig) -> str:
    """``data``'s cache key (:meth:`DataConfig.key`), worked out on the node's first
    message of a run and kept in its ``Context.state``: working it out composes the
    firewall's settings and reads every file's size and time, and a SuperNode starts a
    new process for every message."""
    record = context.state.config_records.get(_STATE)
    if record is None or "data-key" not in record:
        record = ConfigRecord({"data-key": data.key()})
        context.state[_STATE] = record
    return str(record["data-key"])


def _value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
