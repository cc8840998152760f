"""Differential privacy: the run config's modes, the ClientApp's mod, the spent budget."""

import json
import time

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict

from deid_client.task.dp import dp_mod, local_noise_multiplier
from deid_client.task.segmentation import unet_for
from deid_client.task.settings import run_settings
from server.ledger import PrivacyLedger
from simulations.engine import run_simulation
from tests.runconfig import RUN_CONFIG


@pytest.mark.parametrize("config,error", [
    ({"dp": "laplace"}, "dp must be one of"),
    ({"dp": "off", "dp-noise": 0.1}, "dp = 'central'"),
    ({"dp": "client", "dp-noise": 0.0}, "needs dp-noise > 0"),
])
def test_a_wrong_dp_setting_is_a_one_line_error(config, error):
    with pytest.raises(ValueError, match=error):
        run_settings({**RUN_CONFIG, **config})


def test_an_unquoted_off_is_off():
    assert run_settings({**RUN_CONFIG, "dp": False}).dp.mode == "off"


def test_a_private_model_has_no_batch_statistics_to_leak():
    """BatchNorm's running means are averages over a site's photos outside any clipping."""
    plain = unet_for(run_settings(RUN_CONFIG).unet)
    private = unet_for(run_settings({**RUN_CONFIG, "dp": "local"}).unet)
    assert any("running_mean" in k for k in plain.state_dict())
    assert all(k in dict(private.named_parameters()) for k in private.state_dict())
    assert sum(p.numel() for p in private.parameters()) == sum(p.numel() for p in plain.parameters())


def _train_message(arrays: dict, config: dict) -> Message:
    """A train message as a node receives it (metadata by hand: no live run)."""
    metadata = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                        group_id="1", created_at=time.time(), ttl=3600.0, message_type="train")
    return Message(content=RecordDict({"arrays": ArrayRecord(arrays), "config": ConfigRecord(config)}),
                   metadata=metadata)


def _context(run_config: dict) -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=run_config)


@pytest.mark.parametrize("mode", ["client", "local"])
def test_the_site_clips_its_update_and_local_mode_adds_noise(mode):
    sent = {"w": torch.zeros(10_000)}
    trained = {"w": torch.full((10_000,), 0.1)}  # an update of norm 10

    def train(msg, context):
        return Message(content=RecordDict({"arrays": ArrayRecord(trained),
                                           "metrics": MetricRecord({"num-examples": 4})}),
                       metadata=msg.metadata)

    run = {**RUN_CONFIG, "dp": mode, "dp-noise": 1.0, "dp-clipping-norm": 2.0, "dp-epsilon": 5.0}
    msg = _train_message(sent, {"clipping_norm": 2.0})
    out = dp_mod(msg, _context(run), train).content["arrays"].to_numpy_ndarrays()[0]
    if mode == "client":  # clipped to norm 2, direction kept, nothing added
        np.testing.assert_allclose(out, 0.02, rtol=1e-5)
    else:  # clipped to 2, then noise of std 2 * local_noise_multiplier(5, 1e-5)
        std = 2.0 * local_noise_multiplier(5.0, float(RUN_CONFIG["dp-delta"]))
        assert abs((out - 0.02).std() / std - 1) < 0.05


def test_the_ledger_charges_a_heavier_site_more():
    equal, unequal = PrivacyLedger("client", 1.0, 1e-5), PrivacyLedger("client", 1.0, 1e-5)
    assert equal.spent()["dp_epsilon"] == 0.0
    assert equal.release([10, 10]) == 1.0
    # a site with 3/4 of the examples moves the average by 3/4 of its clipped update, not 1/2
    assert unequal.release([30, 10]) == pytest.approx(1.0 / (2 * 0.75))
    assert unequal.spent()["dp_epsilon"] > equal.spent()["dp_epsilon"] > 0
    before = equal.spent()["dp_epsilon"]
    equal.release([10, 10])
    assert equal.spent()["dp_epsilon"] > before and equal.spent()["dp_delta"] == 1e-5


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", ["client", "local"])
def test_a_private_simulation_writes_what_it_spent(tmp_path, capfd, mode):
    out = tmp_path / "run"
    config = {"num-server-rounds": 2, "output-dir": str(out), "images-per-client": 8, "local-epochs": 1,
              "dp": mode, "dp-noise": 0.5 if mode == "client" else 0.0, "dp-epsilon": 50.0}
    code = run_simulation(config, num_supernodes=2, cache_dir=tmp_path / "cache", workdir=tmp_path)
    assert code == 0, capfd.readouterr().out[-3000:]
    history = json.loads((out / "history.json").read_text())
    rounds = history["rounds"]
    assert [r["status"] for r in rounds] == ["ok", "ok"]
    # what history.json says was spent is what the accountant makes of these releases
    ledger = PrivacyLedger(mode, 0.5 if mode == "client" else local_noise_multiplier(50.0, 1e-5), 1e-5)
    for entry in rounds:
        ledger.compose(entry["dp_noise_multiplier"])
        assert entry["dp_epsilon"] == pytest.approx(ledger.spent()["dp_epsilon"])
    assert rounds[1]["dp_epsilon"] > rounds[0]["dp_epsilon"] > 0
    assert history["dp"] == mode and history["dp_epsilon"] == rounds[1]["dp_epsilon"]
    assert history["privacy_violations"] == [] and history["replies_screened"] == 8
