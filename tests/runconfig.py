"""The run config's defaults, from their one owner (pyproject's ``[tool.flwr.app.config]``)."""

import dataclasses
import tomllib
from pathlib import Path

from deid_client.task.data import DataConfig
from deid_client.task.settings import node_settings

RUN_CONFIG = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
                           )["tool"]["flwr"]["app"]["config"]


def data_settings(**fields) -> DataConfig:
    """A node's ``DataConfig`` with the run config's defaults, and ``fields`` changed."""
    return dataclasses.replace(node_settings(RUN_CONFIG, {}).data, **fields)
