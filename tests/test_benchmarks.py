"""The benchmark scripts a GPU session runs must not rot on the CPU: tiny sizes, one repeat.

They print figures; nothing here asserts a speed (benchmarks measure, tests do not time).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*argv: str, timeout: int = 600) -> dict:
    done = subprocess.run([sys.executable, *argv, "--json"], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_flowedit_firewall_benchmark_runs_at_small_size():
    result = _run("benchmarks/flowedit.py", "--family", "sd3", "--size", "64x48", "--repeats", "1",
                  "--firewall", "--optimisations", "sdpa,prompt_cache,vae_tiling")["sd3"]
    assert result["transformer_calls"] == 33 and result["baseline_transformer_calls"] == 66
    assert set(result["optimisations"]) == {"sdpa", "prompt_cache", "vae_tiling"}
    assert all(v["on"] > 0 and v["off"] > 0 for v in result["optimisations"].values())
    assert set(result["seconds_per_edit_by_photos_per_call"]) == {"1", "2", "4"}
    assert result["firewall_seconds"] > 0 and result["twin_n_max"] == 12


@pytest.mark.slow
def test_firewall_benchmark_compares_batched_and_single_on_the_same_photos():
    result = _run("benchmarks/firewall.py", "--photos", "3", "--repeats", "1", "--skip-main-job",
                  "--batch-size", "3", "identity.steps=3", "identity.n_max=3", "identity.n_min=1")
    assert result["photos"] == 3 and result["batch_size"] == 3 and result["max_difference"] <= 1
    # one call per step for the batch (2 heal + 3 identity steps, the last one sampled); per photo
    # on the single side
    assert result["batched"]["transformer_calls"] == 5
    assert result["single"]["transformer_calls"] == 3 * 5
    assert result["single"]["transformer_rows"] == result["batched"]["transformer_rows"]
    assert result["speedup"] == pytest.approx(
        result["photos_per_second_batched"] / result["photos_per_second_single"])


@pytest.mark.slow
def test_deid_benchmark_reports_every_attacker_and_quotes_the_worst():
    result = _run("benchmarks/phantom_deid.py", "--patients", "3", "--identities", "2",
                  "--train-sessions", "2", "identity.steps=2", "identity.n_max=2", "identity.n_min=1")
    attackers = ("cnn", "aware", "dlib", "mimic")
    for name in attackers:
        for kind in ("original", "surrogate", "twin"):
            assert 0.0 <= result[f"reid_{kind}_{name}"] <= 1.0
    assert result["reid_surrogate"] == max(result[f"reid_surrogate_{n}"] for n in attackers)
    assert result["reid_twin"] == max(result[f"reid_twin_{n}"] for n in attackers)
    assert result["reid_surrogate"] == result[f"reid_surrogate_{result['worst_attacker']}"]
    assert result["surrogates"] == 6 and result["reid_chance"] == pytest.approx(1 / 3)
    for kind in ("surrogate", "twin"):  # a photo's 2 surrogates pooled: one answer per patient
        pooled = [result[f"reid_pooled2_{kind}_{n}"] for n in attackers]
        assert result[f"reid_pooled2_{kind}"] == max(pooled)
        assert all(round(3 * rate, 6) in (0, 1, 2, 3) for rate in pooled)
    assert 0.0 <= result["gate_released"] <= 1.0 and 0 <= result["gate_no_face"] <= 6
    if result["gate_released"] > 0:  # the attackers also judged on what the gate lets out
        assert result["gated_reid_surrogate"] == max(result[f"gated_reid_surrogate_{n}"] for n in attackers)
    # the firewall it measured, as benchmarks/frontier.py matches it
    from deid_client.firewall.config import compose_firewall, settings_record

    assert result["firewall_settings"] == settings_record(compose_firewall(
        ["identity.steps=2", "identity.n_max=2", "identity.n_min=1"]), complete=True)


@pytest.mark.slow
def test_distribution_table_compares_the_papers_pairs():
    result = _run("benchmarks/distributions.py", "--patients", "2", "identity.steps=2", "identity.n_max=2",
                  "identity.n_min=1")
    for pair in ("original_vs_synthetic_healthy", "surrogate_vs_twin", "original_vs_exact_healthy"):
        for region in ("image", "face"):
            assert 0.0 < result[f"{pair}_{region}_bhattacharyya_mean"] <= 1.0
            assert 0.0 <= result[f"{pair}_{region}_ks_mean"] <= 1.0
    # the lesion is a small part of the image: inside the face the pairs differ more
    assert (result["original_vs_exact_healthy_face_ks_mean"]
            > result["original_vs_exact_healthy_image_ks_mean"])


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_update_leakage_benchmark_reports_every_scenario_source_and_attacker(tmp_path):
    result = _run("benchmarks/update_leakage.py", "--patients", "4", "--simulated-rounds", "30",
                  "--iterations", "2", "--figures", str(tmp_path),
                  "--firewall", "lesion_gain=1.0 surrogates_per_photo=2", timeout=1100)
    assert result["chance"] == pytest.approx(1 / 4) and result["reid_originals"]["dlib"] == 1.0
    expected = {f"{s}/{c}" for s in "abc" for c in ("round-1", "mid-training")} | {"d/round-1"}
    assert set(result["scenarios"]) == expected
    # the main job's firewall with --firewall on top, and (c) replays the main job's training
    from deid_client.firewall import compose_firewall
    from deid_client.firewall.config import settings_record
    from simulations.run import compose_run_config

    # 4 patients leave the server gallery sites for updates of (b)'s 2 photos x K = 2 surrogates
    overrides = ["lesion_gain=1.0", "surrogates_per_photo=2"]
    assert result["firewall"] == settings_record(compose_firewall(overrides), complete=True)
    assert compose_firewall().lesion_gain != 1.0  # so the report shows the override
    main_job = compose_run_config()
    assert result["main_job"] == {k: main_job[k] for k in result["main_job"]}
    assert {"local-epochs", "batch-size", "lr", "num-server-rounds"} <= set(result["main_job"])
    # a site trains on each photo's K surrogates, and the server inverts updates of that size
    k = result["surrogates_per_photo"]
    assert k == compose_firewall(overrides).surrogates_per_photo == 2
    for scenario, photos_a_site in (("a", 1), ("b", 2), ("d", 2)):
        got = result["scenarios"][f"{scenario}/round-1"]
        assert got["truth"]["images_in_update"] == photos_a_site
        assert got["surrogate"]["images_in_update"] == photos_a_site * k
        assert (got["truth"]["reconstructions"], got["surrogate"]["reconstructions"]) == (4, 4 * k)
        # a site of one photo: the attackers pool its K reconstructions too (reid_worst counts them)
        pooled = {key for key in got["surrogate"] if key.endswith("-pooled")}
        assert pooled == ({f"reid_{a}-pooled" for a in ("dlib", "aware", "inverted", "inverted-cnn")}
                          if scenario == "a" and k > 1 else set())
    for name, scenario in result["scenarios"].items():
        for source in ("truth", "surrogate"):
            scores = scenario[source]
            reid = {k: v for k, v in scores.items() if k.startswith("reid_") and k != "reid_worst"}
            assert {"reid_dlib", "reid_aware"} <= set(reid)
            assert scores["reid_worst"] == max(reid.values())
            assert 0 <= scores["ssim_patient"] <= 1 and 0 <= scores["ssim_surrogate"] <= 1
        if not name.startswith("c/"):  # the learned attacks: the update channel's attackers too,
            assert {"reid_inverted", "reid_inverted-cnn"} <= set(scenario["truth"])
            for source in ("truth", "surrogate"):  # and the generative prior's reconstructions
                scores = scenario["generative"][source]
                assert {"reid_dlib", "reid_aware", "reid_inverted"} <= set(scores)
                assert 0 <= scores["ssim_patient"] <= 1
    assert {p.name for p in tmp_path.iterdir()} >= {"a_round-1.png", "d_round-1.png"}


def test_update_leakage_says_when_the_cohort_is_too_small_for_an_update():
    done = subprocess.run([sys.executable, "benchmarks/update_leakage.py", "--patients", "4",
                           "--firewall", "surrogates_per_photo=3"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--patients 4 is too few" in done.stderr and "at least 6" in done.stderr


def test_the_frontier_pairs_each_settings_dice_ratio_with_its_worst_attacker(tmp_path):
    """benchmarks/frontier.py: y is the surrogate cell's Dice over the truth cell's, per non-IID
    level then averaged; x the worst attacker, pooled over a photo's K surrogates where
    that is worse than one at a time."""
    import importlib.util

    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("frontier", ROOT / "benchmarks" / "frontier.py")
    frontier = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(frontier)

    def run(source, firewall, non_iid, seed, dice):
        return {"mask_source": source, "firewall": firewall, "clients": 2, "strategy": "fedavg",
                "non_iid": non_iid, "rounds": 5, "seed": seed, "dice": [0.0, dice]}

    from deid_client.firewall.config import compose_firewall, settings_record

    shipped = compose_firewall()
    k = shipped.surrogates_per_photo  # the shipped K > 1 (firewall.yaml); K = 1 is an override
    assert k > 1
    runs = [run("truth", "", 0.2, s, 0.8) for s in (0, 1)] + [run("truth", "", 0.8, 0, 0.6)]
    runs += [run("surrogate", "surrogates_per_photo=1", 0.2, 0, 0.5),
             run("surrogate", "surrogates_per_photo=1", 0.2, 1, 0.7),
             run("surrogate", "surrogates_per_photo=1", 0.8, 0, 0.3)]
    runs += [run("surrogate", "", 0.2, 0, 0.72), run("surrogate", "", 0.8, 0, 0.45)]

    def measured(setting: str, **figures) -> dict:  # a benchmark run's record of its firewall
        record = settings_record(compose_firewall(setting.split()), complete=True)
        return figures | {"firewall_settings": record}

    pooled = f"reid_pooled{k}_surrogate"  # the benchmark's record of a photo's K surrogates pooled
    benchmark = measured("", reid_surrogate=0.04, worst_attacker="aware",
                         **{pooled: 0.06, f"{pooled}_dlib": 0.06, f"{pooled}_aware": 0.02})
    rows = frontier.frontier({"runs": runs}, [benchmark])
    assert [r["setting"] for r in rows] == [
        f"default (privacy=high, K={k}, lesion_gain={shipped.lesion_gain:g})", "surrogates_per_photo=1"]
    assert rows[1]["ratio"] == pytest.approx((0.6 / 0.8 + 0.3 / 0.6) / 2)
    assert (rows[1]["reid_surrogate"], rows[1]["worst_attacker"]) == (0.04, "aware")
    assert rows[0]["ratio"] == pytest.approx((0.72 / 0.8 + 0.45 / 0.6) / 2)
    assert (rows[0]["reid_surrogate"], rows[0]["worst_attacker"]) == (0.06, "dlib (pooled)")
    # a level measured only at K = 1 is quoted at K = 1, and nowhere else
    assert frontier.privacy("privacy=low surrogates_per_photo=1", [benchmark])["reid_surrogate"] == 0.596
    with pytest.raises(ValueError, match="no privacy figures"):
        frontier.privacy("privacy=low", [benchmark])
    with pytest.raises(ValueError, match=f"reid_pooled{k + 1}"):
        frontier.privacy(f"surrogates_per_photo={k + 1}", [benchmark])
    for other in ("theta=3", "no_such_key=1"):  # a key the firewall lacks, too
        with pytest.raises(ValueError, match="no privacy figures|no_such_key"):
            frontier.privacy(other, [benchmark])
    # a run's figures count for the setting it measured, however that is spelled, and for no other
    other = measured("theta=4.0", reid_surrogate=0.05, worst_attacker="mimic")
    assert frontier.privacy("surrogates_per_photo=1 theta=4", [benchmark, other])["reid_surrogate"] == 0.05
    assert frontier.privacy("surrogates_per_photo=1", [other, benchmark])["reid_surrogate"] == 0.04
    # a setting the privacy benchmark has not measured keeps its row, without an x
    runs += [run("surrogate", "theta=3", 0.2, 0, 0.4)]
    rows = frontier.frontier({"runs": runs}, [benchmark])
    assert [(r["setting"], r["reid_surrogate"]) for r in rows][1:] == [
        ("surrogates_per_photo=1", 0.04), ("theta=3", None)]
    assert rows[2]["ratio"] == pytest.approx(0.4 / 0.8)
    frontier.figure(rows, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0


def test_every_point_of_the_settings_sweep_is_a_firewall():
    """benchmarks/phantom_deid.py --sweep: each grid's points, over the settings they vary
    around, compose to a valid firewall today (a moved default must not break a grid)."""
    import importlib.util

    from deid_client.firewall import compose_firewall

    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("phantom_deid", ROOT / "benchmarks" / "phantom_deid.py")
    deid = importlib.util.module_from_spec(spec)
    sys.modules["phantom_deid"] = deid  # its dataclasses look their module up
    spec.loader.exec_module(deid)
    for name, (base, points) in deid.GRIDS.items():
        for point in points:
            cfg = compose_firewall([f"{k}={v}" for k, v in {**base, **point}.items()])
            assert cfg.lesion == point.get("lesion", cfg.lesion), name
