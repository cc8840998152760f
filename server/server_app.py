"""The Flower ServerApp: aggregate weights, checkpoint every round, write the history."""

from __future__ import annotations

import logging
import time

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from deid_client.task.privacy import dp_mode
from deid_client.task.segmentation import unet_for

from .history import RunRecorder
from .rounds import RunFailed
from .strategy import make_strategy

app = ServerApp()
log = logging.getLogger(__name__)


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    recorder = RunRecorder(str(cfg["output-dir"]))
    total_rounds = int(cfg["num-server-rounds"])
    resumed = recorder.resume()
    if resumed is None:
        done, state = 0, unet_for(cfg, seed=int(cfg["seed"])).state_dict()
    else:
        done, state = resumed
        log.warning("resuming from %s after round %d", recorder.checkpoint, done)
    if done >= total_rounds:
        log.warning("all %d rounds were already done; nothing to run", total_rounds)
        return
    strategy = make_strategy(
        str(cfg["strategy"]), model_shapes={k: tuple(v.shape) for k, v in state.items()},
        min_nodes=int(cfg["min-nodes"]), fraction_train=float(cfg["fraction-train"]),
        proximal_mu=float(cfg["proximal-mu"]), dp=dp_mode(cfg),
        dp_noise_multiplier=float(cfg["dp-noise"]), dp_clipping_norm=float(cfg["dp-clipping-norm"]),
        dp_epsilon=float(cfg["dp-epsilon"]), dp_delta=float(cfg["dp-delta"]),
        max_failed_rounds=int(cfg["max-failed-rounds"]))
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
        train_config=ConfigRecord({"lr": float(cfg["lr"]), "rounds-done": done,
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
        raise RunFailed(f"{len(strategy.failed_rounds)} rounds had fewer than {cfg['min-nodes']} "
                        f"successful replies (max-failed-rounds = {cfg['max-failed-rounds']}); "
                        f"the last good model is in {recorder.root / 'final_model.pt'}; "
                        f"each node's error is in history.json")
