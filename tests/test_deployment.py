"""A real deployment on 127.0.0.1: SuperLink with TLS and SuperNode authentication,
two registered SuperNodes that run the app to completion, one unregistered that is refused."""

import json
import time

import pytest

from tests.federation import Federation, make_node_keys


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("deployment")
    fed = Federation(root)
    try:
        fed.start_superlink()
        keys = {name: make_node_keys(root, name) for name in ("site0", "site1", "intruder")}
        fed.register(keys["site0"][1])
        fed.register(keys["site1"][1])
        fed.nodes = {name: fed.start_supernode(
            name, keys[name], f"partition-id={i % 2} num-partitions=2 cache-dir='{root / name}'")
            for i, name in enumerate(keys)}
        yield fed
    finally:
        fed.close()


def online_nodes(fed: Federation) -> list[dict]:
    listed = fed.flwr("supernode", "list", "test", "--format", "json")
    return [n for n in json.loads(listed.stdout)["nodes"] if n["status"] == "online"]


@pytest.mark.timeout(600)
def test_unregistered_supernode_is_refused(federation):
    intruder = federation.nodes["intruder"]
    deadline = time.monotonic() + 60
    while intruder.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert intruder.returncode not in (None, 0), "an unregistered SuperNode was let in"
    assert "Failed to activate SuperNode" in federation.log("intruder")
    deadline = time.monotonic() + 60
    while len(online_nodes(federation)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(online_nodes(federation)) == 2  # both registered sites, nobody else


@pytest.mark.timeout(900)
def test_app_runs_to_completion_over_tls(federation):
    out = federation.root / "out"
    run = federation.flwr(
        "run", ".", "test", "--stream", "--run-config",
        f"num-server-rounds=1 output-dir='{out}' images-per-client=8 image-size=64 "
        "local-epochs=1 batch-size=4", timeout=800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    history = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in history["rounds"]] == [1]
    # Both sites' train and evaluate replies were screened over the wire; none broke the contract.
    assert history["privacy_violations"] == [] and history["replies_screened"] == 4
    assert (out / "final_model.pt").is_file()
