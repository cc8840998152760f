"""The federated study: a small slice of its Hydra sweep, its resume and its report."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SLICE = ["strategy=centralised", "data.mask_source=truth,naive", "data.seed=0,1", "data.non_iid=0.8",
         "simulation.num_clients=2", "simulation.rounds=2", "segmentation.local_epochs=1",
         "data.images_per_client=8"]


@pytest.mark.slow
def test_a_study_slice_runs_resumes_and_reports(tmp_path):
    """Centralised cells only (no Flower start-up): 2 mask sources x 2 seeds. The table
    holds each cell's mean and std over its seeds; a rerun redoes nothing."""
    sweep, docs = tmp_path / "study", tmp_path / "docs"
    command = [sys.executable, "-m", "simulations.run", "--config-name", "study", "-m", *SLICE,
               f"hydra.sweep.dir={sweep}", f"hydra.callbacks.study_report.docs_dir={docs}",
               f"simulation.cache_dir={tmp_path / 'cache'}"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    results = sorted(sweep.glob("*/result.json"))
    assert len(results) == 4
    report = json.loads((docs / "generated" / "study.json").read_text())
    assert len(report["runs"]) == 4 and len(report["cells"]) == 2
    for cell in report["cells"]:
        finals = [r["dice"][-1] for r in report["runs"] if r["mask_source"] == cell["mask_source"]]
        assert cell["seeds"] == [0, 1] and len(cell["curve"]) == 2
        assert cell["final_dice_mean"] == pytest.approx(np.mean(finals))
        assert cell["final_dice_std"] == pytest.approx(np.std(finals))
        row = f"{cell['final_dice_mean']:.3f} ± {cell['final_dice_std']:.3f}"
        assert row in (docs / "study.md").read_text()
    assert (docs / "generated" / "study.png").stat().st_size > 0
    stamps = [p.stat().st_mtime_ns for p in results]
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("already done with these settings") == 4
    assert [p.stat().st_mtime_ns for p in results] == stamps


def test_the_report_keeps_the_earlier_reports_other_runs(tmp_path):
    """A grid run in slices: the new sweep's runs replace the same cell and seed of the
    earlier ``study.json``, its other runs stay, and ``fresh`` drops them."""
    from simulations.study import write_report

    cell = {"mask_source": "truth", "clients": 2, "non_iid": 0.8, "strategy": "fedavg", "rounds": 2}
    sweep = tmp_path / "sweep" / "run"
    sweep.mkdir(parents=True)
    (sweep / "result.json").write_text(json.dumps(cell | {"seed": 0}))
    (sweep / "history.json").write_text(json.dumps({"rounds": [{"eval_dice": 0.3}, {"eval_dice": 0.5}]}))
    earlier = [cell | {"seed": 0, "dice": [0.1, 0.2]}, cell | {"seed": 1, "dice": [0.2, 0.7]},
               cell | {"clients": 4, "seed": 0, "dice": [0.0, 0.4]}]
    docs = tmp_path / "docs"
    (docs / "generated").mkdir(parents=True)
    (docs / "generated" / "study.json").write_text(json.dumps({"runs": earlier, "cells": []}))

    rows = write_report(tmp_path / "sweep", docs)
    runs = json.loads((docs / "generated" / "study.json").read_text())["runs"]
    assert sorted((r["clients"], r["seed"], r["dice"][-1]) for r in runs) == [
        (2, 0, 0.5), (2, 1, 0.7), (4, 0, 0.4)]
    assert [(r["clients"], r["seeds"], r["final_dice_mean"]) for r in rows] == [
        (2, [0, 1], pytest.approx(0.6)), (4, [0], pytest.approx(0.4))]

    rows = write_report(tmp_path / "sweep", docs, fresh=True)
    assert [(r["clients"], r["seeds"]) for r in rows] == [(2, [0])]
    assert len(json.loads((docs / "generated" / "study.json").read_text())["runs"]) == 1

    # The sweep's callback takes the same choice from conf/study.yaml.
    from omegaconf import OmegaConf

    from simulations.study import StudyReport

    sweep_end = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    for fresh, kept in ((False, 3), (True, 1)):
        (docs / "generated" / "study.json").write_text(json.dumps({"runs": earlier, "cells": []}))
        StudyReport(str(docs), fresh=fresh).on_multirun_end(sweep_end)
        runs = json.loads((docs / "generated" / "study.json").read_text())["runs"]
        assert len(runs) == kept


def test_the_report_lists_the_grids_runs_still_missing(tmp_path):
    """Under the table: how many of ``conf/study.yaml``'s runs are not yet made at today's
    defaults, by clients and strategy. A run with firewall overrides does not count."""
    from simulations.study import study_grid, write_report

    grid = study_grid()
    total = int(np.prod([len(v) for v in grid.values()]))
    cell = {"mask_source": "truth", "clients": 8, "non_iid": 0.2, "strategy": "fedprox", "rounds": 5}
    earlier = [cell | {"seed": s, "dice": [0.5] * 5} for s in (0, 1, 2)]
    earlier.append(cell | {"mask_source": "surrogate", "seed": 0, "firewall": "surrogates_per_photo=1",
                           "dice": [0.4] * 5})
    docs = tmp_path / "docs"
    (docs / "generated").mkdir(parents=True)
    (docs / "generated" / "study.json").write_text(json.dumps({"runs": earlier, "cells": []}))
    write_report(tmp_path / "no-sweep", docs)
    text = (docs / "study.md").read_text()
    assert f"Not yet run at today's defaults: {total - 3} of the grid's {total} runs" in text
    n = len(grid["seed"]) * len(grid["non_iid"])  # runs per cell
    assert f"- 8 clients, fedprox: `truth` {n - 3}, `oracle` {n}, `surrogate` {n}," in text
    assert f"- 2 clients, fedavg: `truth` {n}," in text


def test_cells_that_differ_only_by_firewall_overrides_stay_apart(tmp_path):
    """A run with ``data.firewall`` overrides is its own cell, beside the shipped defaults'
    (earlier reports' runs, recorded before the column, count as the defaults)."""
    from simulations.study import write_report

    cell = {"mask_source": "surrogate", "clients": 2, "non_iid": 0.8, "strategy": "fedavg", "rounds": 1}
    for name, firewall, dice in (("k1", "", 0.5), ("k2", "surrogates_per_photo=2", 0.6)):
        run = tmp_path / "sweep" / name
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps(cell | {"seed": 0, "firewall": firewall}))
        (run / "history.json").write_text(json.dumps({"rounds": [{"eval_dice": dice}]}))
    docs = tmp_path / "docs"
    (docs / "generated").mkdir(parents=True)
    (docs / "generated" / "study.json").write_text(
        json.dumps({"runs": [cell | {"seed": 1, "dice": [0.3]}], "cells": []}))
    rows = write_report(tmp_path / "sweep", docs)
    assert [(r["firewall"], r["seeds"], r["final_dice_mean"]) for r in rows] == [
        ("", [0, 1], pytest.approx(0.4)), ("surrogates_per_photo=2", [0], pytest.approx(0.6))]
    assert "| surrogate | surrogates_per_photo=2 | 0.600 ± 0.000 | 1 |" in (docs / "study.md").read_text()


def test_every_mask_source_has_its_place_in_the_figure():
    from deid_client.task.data import SURROGATE
    from research.mask_sources import SOURCES
    from simulations.study import SOURCE_COLOURS

    assert sorted(SOURCE_COLOURS) == sorted([SURROGATE, *SOURCES])


def test_a_result_made_under_another_firewall_default_is_not_this_runs(tmp_path, monkeypatch):
    """The resume check looks past the run config to the firewall settings the package
    resolves: when a shipped default changes, the same command line is a new run."""
    import dataclasses

    from hydra import compose, initialize_config_dir

    from deid_client.firewall import compose_firewall
    from deid_client.task.data import DataConfig
    from deid_client.task.settings import node_settings
    from simulations.run import already_done, run_config, run_identity
    from simulations.study import firewall_record

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="simulation")
    settings = run_config(cfg, tmp_path)
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"final_dice": 0.5} | run_identity(settings, 2)))
    assert already_done(result, run_identity(settings, 2))
    assert not already_done(result, run_identity(settings | {"lr": 0.001}, 2))
    # a run through the firewall records every setting it resolved, K included; others none
    recorded = run_identity(settings, 2)["firewall_settings"]
    assert recorded == firewall_record(compose_firewall())
    assert recorded["surrogates_per_photo"] == compose_firewall().surrogates_per_photo
    assert "firewall_settings" not in run_identity(settings | {"mask-source": "oracle"}, 2)

    shipped = DataConfig.firewall_settings.func
    moved = property(lambda self: dataclasses.replace(shipped(self), theta=shipped(self).theta + 1))
    monkeypatch.setattr(DataConfig, "firewall_settings", moved)
    assert run_identity(settings, 2)["run_config"] == json.loads(result.read_text())["run_config"]
    assert not already_done(result, run_identity(settings, 2))
    assert run_identity(settings, 2)["firewall_settings"]["theta"] == shipped(
        node_settings(settings, {"num-partitions": 2}).data).theta + 1


def test_the_simulation_defaults_are_the_flower_apps_defaults(tmp_path):
    """The Hydra configs (researchers) and ``[tool.flwr.app.config]`` (deployments) both set
    the run's defaults: a value changed in one place only would make the main job and a
    hospital deployment train differently."""
    import tomllib

    from hydra import compose, initialize_config_dir

    from simulations.run import run_config

    app = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        fedavg = run_config(compose(config_name="simulation"), tmp_path)
        fedprox = run_config(compose(config_name="simulation", overrides=["strategy=fedprox"]), tmp_path)
    shared = set(fedavg) - {"output-dir", "proximal-mu"}  # mu is FedProx's: fedavg's 0 is unused
    assert shared <= set(app)
    assert {k: fedavg[k] for k in shared} == {k: app[k] for k in shared}
    assert fedprox["proximal-mu"] == app["proximal-mu"]


def test_a_run_is_labelled_by_its_firewall_against_todays_default(tmp_path):
    """A run that recorded its firewall settings keeps its meaning when a default changes:
    one made under an older default with no overrides is labelled by what differs today, and
    one that overrode a setting to today's default value is a default run."""
    from deid_client.firewall import compose_firewall
    from simulations.study import firewall_record, write_report

    k = compose_firewall().surrogates_per_photo
    cell = {"mask_source": "surrogate", "clients": 2, "non_iid": 0.8, "strategy": "fedavg", "rounds": 1}
    made = {"older-default": ("", [f"surrogates_per_photo={k + 1}"], 0.5),
            "today-by-override": (f"surrogates_per_photo={k}", [f"surrogates_per_photo={k}"], 0.6),
            "low": ("privacy=low", ["privacy=low", "theta=3.0"], 0.7)}
    for seed, (name, (given, resolved, dice)) in enumerate(made.items()):
        run = tmp_path / "sweep" / name
        run.mkdir(parents=True)
        record = firewall_record(compose_firewall(resolved))
        (run / "result.json").write_text(json.dumps(cell | {"seed": seed, "firewall": given,
                                                            "firewall_settings": record}))
        (run / "history.json").write_text(json.dumps({"rounds": [{"eval_dice": dice}]}))
    # a mask source without the firewall is one cell whatever firewall was in force
    truth = tmp_path / "sweep" / "truth"
    truth.mkdir()
    (truth / "result.json").write_text(json.dumps(cell | {"mask_source": "truth", "seed": 0, "firewall": "",
                                                          "firewall_settings": record}))
    (truth / "history.json").write_text(json.dumps({"rounds": [{"eval_dice": 0.8}]}))
    docs = tmp_path / "docs"
    (docs / "generated").mkdir(parents=True)
    rows = write_report(tmp_path / "sweep", docs)
    assert sorted((r["mask_source"], r["firewall"], r["seeds"]) for r in rows) == [
        ("surrogate", "", [1]), ("surrogate", "privacy=low theta=3.0", [2]),
        ("surrogate", f"surrogates_per_photo={k + 1}", [0]), ("truth", "", [0])]
    runs = json.loads((docs / "generated" / "study.json").read_text())["runs"]
    assert sorted(r["firewall_settings"]["privacy"] for r in runs if r["mask_source"] == "surrogate") == [
        "high", "high", "low"]
    # the report keeps the settings, so a later report labels the same runs the same way
    assert [r["firewall"] for r in rows] == [r["firewall"] for r in write_report(tmp_path / "empty", docs)]


def test_a_record_from_before_a_setting_existed_had_its_old_value(monkeypatch):
    """A run recorded before a setting was added (``ADDED_SETTINGS``) ran at that setting's
    old value: once the default moves, it is labelled with the old value, not as a default run."""
    from deid_client.firewall import compose_firewall
    from deid_client.firewall.config import ADDED_SETTINGS
    from simulations import study

    old = study.firewall_record(compose_firewall(["lesion_gain=1.0"]))
    del old["lesion_gain"]  # recorded before lesion_gain existed
    assert study.firewall_label(old) == study.firewall_label(
        study.firewall_record(compose_firewall(["lesion_gain=1.0"])))
    # today's default moved to 1.25: the old run is not today's default
    moved = study.firewall_record(compose_firewall(["lesion_gain=1.25"]))
    monkeypatch.setattr(study, "_shipped", lambda overrides: moved)
    assert ADDED_SETTINGS["lesion_gain"] == 1.0
    assert study.firewall_label(old) == "lesion_gain=1.0"
    assert study.firewall_label(moved) == ""
