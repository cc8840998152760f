"""Settings are read once, at the edges: the run config and node config in one module,
every default in one home, the firewall composed once per node and run."""

import ast
import time
from pathlib import Path

import yaml
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

import deid_client.firewall.config as firewall_config
from deid_client import client_app
from deid_client.task import settings
from deid_client.task.segmentation import unet_for
from simulations.defaults import GROUP_KEYS, app_defaults
from tests.runconfig import RUN_CONFIG

ROOT = Path(__file__).resolve().parent.parent


def _message(kind: str, arrays: dict, server_round: int) -> Message:
    metadata = Metadata(run_id=1, message_id=f"m{server_round}{kind}", src_node_id=0, dst_node_id=1,
                        reply_to_message_id="", group_id=str(server_round), created_at=time.time(),
                        ttl=3600.0, message_type=kind)
    config = {"lr": 0.002, "rounds-done": 0, "server-round": server_round, "num-server-rounds": 3}
    return Message(content=RecordDict({"arrays": ArrayRecord(arrays), "config": ConfigRecord(config)}),
                   metadata=metadata)


def test_a_node_composes_its_firewall_once_over_a_run(tmp_path, monkeypatch):
    """Three rounds of train + evaluate, each message in a fresh process as a SuperNode runs
    them (the process memo cleared): the firewall's config is composed on the first message
    only; every later round, on the warm cache, composes it 0 times."""
    calls = []
    compose = firewall_config.compose_firewall
    monkeypatch.setattr(firewall_config, "compose_firewall",
                        lambda *a, **k: calls.append(a) or compose(*a, **k))
    run = {**RUN_CONFIG, "images-per-client": 4, "local-epochs": 1, "firewall": "surrogates_per_photo=1"}
    context = Context(run_id=1, node_id=1, state=RecordDict(), run_config=run,
                      node_config={"partition-id": 0, "num-partitions": 1, "cache-dir": str(tmp_path)})
    weights = unet_for(settings.run_settings(run).unet).state_dict()
    per_round = []
    for server_round in (1, 2, 3):
        before = len(calls)
        reply = client_app.train(_message("train", weights, server_round), context)
        weights = reply.content["arrays"].to_torch_state_dict()
        client_app.evaluate_global(_message("evaluate", weights, server_round), context)
        per_round.append(len(calls) - before)
        settings._node_settings.cache_clear()  # the next message: a new ClientApp process
    assert per_round == [1, 0, 0]
    assert reply.content["metrics"]["num-examples"] > 0


def test_only_the_settings_module_reads_the_run_config():
    """``run_config[...]`` / ``node_config[...]`` and ``.get`` on them appear in
    ``client_app.py``, ``server_app.py`` and ``deid_client/task/settings.py`` only."""
    readers = set()
    for path in [*ROOT.glob("deid_client/**/*.py"), *ROOT.glob("server/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("run_config", "node_config"):
                readers.add(path.relative_to(ROOT).as_posix())
    assert readers <= {"deid_client/client_app.py", "server/server_app.py", "deid_client/task/settings.py",
                       "deid_client/task/dp.py"}  # dp_mod hands context.run_config to settings
    reads = {p.relative_to(ROOT).as_posix() for p in [*ROOT.glob("deid_client/**/*.py"),
                                                       *ROOT.glob("server/**/*.py")]
             if "run_config[" in p.read_text() or "node_config[" in p.read_text()}
    assert reads <= {"deid_client/task/settings.py"}


def test_every_run_config_default_has_one_home():
    """``pyproject.toml``'s ``[tool.flwr.app.config]`` owns every default; no YAML of
    ``conf/`` restates one (an option holds only what it changes), and the simulation's
    composed defaults are exactly the app's."""
    from simulations.run import compose_run_config

    app = app_defaults()
    names = {key.replace("-", "_"): key for keys in GROUP_KEYS.values() for key in keys}
    restated = []
    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        group = path.parent.name
        for key, value in (yaml.safe_load(path.read_text()) or {}).items():
            if not isinstance(value, dict):
                value = {key: value}
                key = group
            for name, v in value.items():
                run_key = group if name == "name" and group in GROUP_KEYS else names.get(name)
                if run_key in app and v == app[run_key]:
                    restated.append(f"{path.relative_to(ROOT)}: {name}")
    assert restated == []
    composed = compose_run_config()
    assert {k: composed[k] for k in app if k in composed and k != "output-dir"} == \
        {k: app[k] for k in app if k in composed and k != "output-dir"}


def test_a_research_mask_source_needs_the_lab(monkeypatch):
    """The product trains on the firewall's surrogates; oracle / naive / truth come from the
    lab (research/mask_sources.py), and where it is absent (an installed wheel) the run
    config's mask-source is refused in one line."""
    import pytest

    from deid_client.task import data
    from tests.runconfig import data_settings

    assert data.training_source("surrogate") is None
    assert data_settings(mask_source="oracle").mask_source == "oracle"  # from the checkout's lab
    monkeypatch.setattr(data, "_LAB_SOURCES", "no_such_lab.mask_sources")
    with pytest.raises(ValueError, match="research sources run from a checkout"):
        data_settings(mask_source="oracle")
    assert data_settings(mask_source="surrogate").mask_source == "surrogate"
