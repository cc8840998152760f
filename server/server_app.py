"""The Flower ServerApp: aggregate weights, checkpoint every round, write the history."""

from __future__ import annotations

import logging
import time

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from deid_client.task.segmentation import unet_for
from deid_client.task.settings import run_settings

from .history import RunRecorder
from .rounds import RunFailed
from .strategy import make_strategy

app = ServerApp()
log = logging.getLogger(__name__)


@app.main()
def main(grid: Grid, context: Context) -> None:
    run = run_settings(context.run_config)
    recorder = RunRecorder(run.output_dir)
    total_rounds = run.num_server_rounds
    resumed = recorder.resume()
    if resumed is None:
        done, state = 0, unet_for(run.unet, seed=run.seed).state_dict()
    else:
        done, state = resumed
        log.warning("resuming from %s after round %d", recorder.checkpoint, done)
    if done >= total_rounds:
        log.warning("all %d rounds were already done; nothing to run", total_rounds)
        return
    strategy = make_strategy(
        run.strategy, model_shapes={k: tuple(v.shape) for k, v in state.items()},
        min_nodes=run.min_nodes, fraction_train=run.fraction_train, proximal_mu=run.proximal_mu,
        dp=run.dp, max_failed_rounds=run.max_failed_rounds)
    if strategy.ledger is not None:  # a resumed run has spent privacy already
        for entry in recorder.history():
            if entry["round"] <= done and "dp_noise_multiplier" in entry:
                strategy.ledger.compose(entry["dp_noise_multiplier"])

    ends: dict[int, float] = {}
    latest = {"arrays": ArrayRecord(state)}  # a failed round leaves the last good model here

    def record() -> list[dict]:
        # the strategy's own Result, kept round by round: Flower's equals it once the run ends
        seconds = {r: ends[r] - ends[r - 1] for r in ends if r - 1 in ends}
        if strategy.stopped:  # the rounds after the stop sent nothing: they are not in the history
            seconds = {r: s for r, s in seconds.items() if r <= strategy.failed_rounds[-1]["round"]}
        privacy = ({"dp": strategy.ledger.mode} | strategy.ledger.spent()) if strategy.ledger else {}
        return recorder.write_history(
            strategy.progress, done, {"privacy_violations": strategy.violations,
                                      "replies_screened": strategy.screened, **privacy},
            per_round={done + r: spent for r, spent in strategy.dp_spent.items()},
            round_seconds=seconds,
            failed=[f | {"round": done + f["round"]} for f in strategy.failed_rounds],
            eval_errors={done + r: e for r, e in strategy.eval_errors.items()})

    def checkpoint(server_round: int, arrays: ArrayRecord) -> None:
        ends[server_round] = time.perf_counter()  # round r ends when its aggregate is ready
        latest["arrays"] = arrays
        if server_round == 0:  # Flower's look at the initial model: no round has finished
            return
        record()  # before the checkpoint: a resume never lacks a round's entry
        if not strategy.stopped:
            recorder.save_checkpoint(done + server_round, arrays)

    strategy.start(
        grid=grid, initial_arrays=ArrayRecord(state), num_rounds=total_rounds - done,
        # the client places each round in the whole run (a resumed run continues its lr schedule)
        train_config=ConfigRecord({"lr": run.train.lr, "rounds-done": done,
                                   "num-server-rounds": total_rounds}),
        evaluate_fn=checkpoint)
    rounds = record()
    recorder.save_final(latest["arrays"])
    for entry in rounds:
        if entry.get("status") == "failed":
            log.warning("round %d: FAILED, the global model was kept (%s)", entry["round"],
                        "; ".join(entry["errors"]) or f"{entry['replies']} replies")
            continue
        log.warning("round %d: train_loss %.4f  eval_dice %.4f  eval_iou %.4f", entry["round"],
                    entry.get("train_loss", float("nan")), entry.get("eval_dice", float("nan")),
                    entry.get("eval_iou", float("nan")))
    if strategy.stopped:
        raise RunFailed(f"{len(strategy.failed_rounds)} rounds had fewer than {run.min_nodes} "
                        f"successful replies (max-failed-rounds = {run.max_failed_rounds}); "
                        f"the last good model is in {recorder.root / 'final_model.pt'}; "
                        f"each node's error is in history.json")
