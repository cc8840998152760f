"""The run config's defaults, for Hydra: read from their one home, ``pyproject.toml``'s
``[tool.flwr.app.config]`` (what ``flwr run`` reads), and registered as each config
group's ``_run_config`` node, which every option of the group extends. The YAML files of
``conf/`` hold only what an option changes.

A group's keys are run-config keys in snake_case (``local_epochs`` is ``local-epochs``),
and a group's ``name`` is the key named after the group (``strategy: {name: fedprox}`` is
``strategy = "fedprox"``).
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path

from hydra.core.config_store import ConfigStore

__all__ = ["GROUP_KEYS", "PYPROJECT", "app_defaults", "group_defaults", "register"]

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
#: Each Hydra group's run-config keys (kebab-case); the simulation decides the rest
#: (rounds, how many nodes a round needs, where outputs go).
GROUP_KEYS = {
    "segmentation": ("encoder", "encoder-depth", "lr", "local-epochs", "batch-size"),
    "data": ("images-per-client", "image-size", "mask-source", "firewall", "non-iid",
             "eval-fraction", "seed"),
    "strategy": ("strategy", "fraction-train", "proximal-mu", "dp", "dp-noise", "dp-clipping-norm",
                 "dp-epsilon", "dp-delta"),
}
BASE = "_run_config"  # the node's name in each group


@functools.cache
def app_defaults() -> dict:
    """``[tool.flwr.app.config]`` of the repository's ``pyproject.toml``."""
    return tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]


def group_defaults(group: str) -> dict:
    """One group's defaults under its own (snake_case) names.

    >>> group_defaults("strategy")["name"], group_defaults("segmentation")["local_epochs"]
    ('fedavg', 15)
    """
    app = app_defaults()
    return {("name" if key == group else key.replace("-", "_")): app[key] for key in GROUP_KEYS[group]}


def register() -> None:
    """Store every group's ``_run_config`` node in Hydra's config store."""
    store = ConfigStore.instance()
    for group in GROUP_KEYS:
        store.store(group=group, name=BASE, node=group_defaults(group))


register()
