"""A real deployment on 127.0.0.1: SuperLink with TLS and SuperNode authentication,
two registered SuperNodes that run the app through the firewall to completion (one holds a
phantom partition, the other a hospital folder with only images/ and masks/), one
unregistered that is refused."""

import json
import shutil
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
        node_configs = {
            "site0": f"partition-id=0 num-partitions=2 cache-dir='{root / 'site0'}'",
            "site1": f"data-dir='{hospital_folder(root / 'hospital')}' cache-dir='{root / 'site1'}' "
                     "model='phantom' device='cpu'",
            "intruder": f"partition-id=1 num-partitions=2 cache-dir='{root / 'intruder'}'"}
        fed.nodes = {name: fed.start_supernode(name, keys[name], node_configs[name]) for name in keys}
        yield fed
    finally:
        fed.close()


def hospital_folder(root):
    """A site's own folder: photos and reference masks, no healthy twins."""
    from deid_client.phantom import plan_cohort, write_cohort

    write_cohort(plan_cohort(8, 1, seed=5), root, size=64, progress=False)
    site = root / "hospital_0"
    shutil.rmtree(site / "healthy")
    return site


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
    assert [(r["round"], r["status"]) for r in history["rounds"]] == [(1, "ok")]
    # Both sites trained through the firewall: their caches hold its outputs.
    for site, photos in (("site0", 4), ("site1", 6)):  # site1: 8 photos, 2 held out
        manifests = list((federation.root / site).glob("firewall-*/manifest.json"))
        assert len(manifests) == 1
        manifest = json.loads(manifests[0].read_text())  # the identity gate refuses some
        assert manifest["released"] >= 1 and manifest["released"] + manifest["refused"] >= photos
    # Both sites' train and evaluate replies were screened over the wire; none broke the contract.
    assert history["privacy_violations"] == [] and history["replies_screened"] == 4
    assert (out / "final_model.pt").is_file()
