"""Hydra entry point: one federated simulation per run, a comparison table per sweep.

    python -m simulations.run
    python -m simulations.run simulation.rounds=3 data.mask_source=naive
    python -m simulations.run -m data.mask_source=oracle,naive simulation.num_clients=2,3
    python -m simulations.run --config-name study -m      # the study (docs/study.md)

``strategy=centralised`` trains one model on all sites' data pooled instead
(``simulations.centralised``). A run whose folder already holds its result with the
same settings (the run config, and the firewall's settings as the package resolves
them: a new default is a new run) is not run again (the study's fixed sweep folder
resumes that way).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from deid_client.task.settings import node_settings

from .centralised import train_centralised
from .defaults import GROUP_KEYS, app_defaults, register
from .engine import run_simulation
from .study import firewall_record

RESULT = "result.json"


def run_config(cfg: DictConfig, output_dir: Path) -> dict:
    """The Flower run config (``[tool.flwr.app.config]`` keys) for this Hydra config: the
    app's defaults (``[tool.flwr.app.config]``), the groups' keys by ``simulations.defaults``'
    rule, and what the simulation itself decides
    (rounds, how many nodes a round needs, where the outputs go)."""
    settings = {**app_defaults(), "num-server-rounds": cfg.simulation.rounds,
                "min-nodes": cfg.simulation.num_clients, "output-dir": str(output_dir)}
    for group in GROUP_KEYS:
        for key, value in cfg[group].items():
            settings[group if key == "name" else key.replace("_", "-")] = value
    return settings


def compose_run_config(config_name: str = "simulation", overrides: Sequence[str] = ()) -> dict:
    """The run config of ``conf/<config_name>.yaml`` with Hydra ``overrides``, composed
    without running it: what a run of that config would train with (by default the main
    job's), for research code that replays a run's settings.

    >>> compose_run_config(overrides=["segmentation.local_epochs=3"])["local-epochs"]
    3
    """
    from hydra import compose, initialize_config_dir

    register()  # conf/'s groups extend the run config's defaults
    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    return run_config(cfg, Path("unused"))


def run_identity(settings: dict, num_clients: int) -> dict:
    """What decides a run's result: its run config and its nodes' data, down to the firewall
    settings the installed package resolves (``DataConfig.key``), so a result made under
    another default is not taken for this run's. A run through the firewall (``surrogate``)
    also records those settings, for the study's labels (``simulations.study``)."""
    data = node_settings(settings, {"num-partitions": num_clients}).data
    identity = {"run_config": settings, "data_key": data.key()}
    if data.mask_source == "surrogate":  # the one mask source that runs the firewall
        identity["firewall_settings"] = firewall_record(data.firewall_settings)
    return identity


def already_done(result_file: Path, identity: dict) -> bool:
    """Whether ``result_file`` holds the result of a run with this :func:`run_identity`."""
    if not result_file.is_file():
        return False
    result = json.loads(result_file.read_text())
    return all(result.get(k) == v for k, v in identity.items())


def summarise(history: list[dict], cfg: DictConfig) -> dict:
    last = history[-1] if history else {}
    best = max((e.get("eval_dice", 0.0) for e in history), default=0.0)
    return {"clients": cfg.simulation.num_clients, "rounds": cfg.simulation.rounds,
            "mask_source": cfg.data.mask_source, "firewall": cfg.data.firewall, "strategy": cfg.strategy.name,
            "non_iid": cfg.data.non_iid, "seed": cfg.data.seed, "final_dice": last.get("eval_dice"),
            "final_iou": last.get("eval_iou"), "best_dice": best,
            "first_dice": history[0].get("eval_dice") if history else None}


@hydra.main(config_path="../conf", config_name="simulation", version_base="1.3")
def main(cfg: DictConfig) -> None:
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    settings = run_config(cfg, output_dir)
    result_file = output_dir / RESULT
    identity = run_identity(settings, cfg.simulation.num_clients)
    if already_done(result_file, identity):
        print(f"{output_dir}: already done with these settings")
        return
    cache_dir = hydra.utils.to_absolute_path(cfg.simulation.cache_dir)
    if cfg.strategy.name == "centralised":
        train_centralised(settings, num_sites=cfg.simulation.num_clients, cache_dir=cache_dir)
    else:
        code = run_simulation(settings, num_supernodes=cfg.simulation.num_clients,
                              cpus_per_client=cfg.simulation.cpus_per_client, cache_dir=cache_dir)
        if code != 0 or not (output_dir / "history.json").is_file():
            print(f"simulation failed (flwr run exit code {code}); see the log above", file=sys.stderr)
            sys.exit(code or 1)
    history = json.loads((output_dir / "history.json").read_text())["rounds"]
    if not history or history[-1].get("eval_dice") is None:  # phantom sites always score
        print(f"simulation failed: the last round has no held-out score "
              f"({history[-1].get('eval_errors') if history else 'no rounds'}); see history.json",
              file=sys.stderr)
        sys.exit(1)
    summary = summarise(history, cfg) | identity
    result_file.write_text(json.dumps(summary, indent=2))
    print(f"\n{'round':>5} {'train_loss':>10} {'eval_dice':>9} {'eval_iou':>8}")
    for e in history:
        print(f"{e['round']:>5} {e.get('train_loss', float('nan')):>10.4f} "
              f"{e.get('eval_dice', float('nan')):>9.4f} {e.get('eval_iou', float('nan')):>8.4f}")
    print(f"\noutputs: {output_dir} (history.json, history.csv, convergence.png, final_model.pt)")


if __name__ == "__main__":
    main()
