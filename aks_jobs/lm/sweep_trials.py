"""The local sweep: the trials of sweep.py's search space one after another, each stopped early when
sweep.BanditRule says so, each an MLflow child run of one sweep run; the best trial's model is the output.

Azure ML runs the same definition as a sweep node instead (aml_pipeline.py); there train.py runs one
trial per job and AML applies the rule to the dev_loss values the trials log.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import mlflow
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from aks_jobs.lm.limits import WallClockLimit, any_rank
from aks_jobs.lm.presets import PRETRAINED
from aks_jobs.lm.sweep import GOAL, PRIMARY_METRIC, BanditRule, BestByInterval, SearchSpace, SweepClock
from aks_jobs.lm.tracking import flat_params, use_experiment
from aks_jobs.lm.training import SUMMARY, TrainRequest, checkpoint_dir, train
from pipeline_contracts.train_summary import SweepSummary, SweepTrial

log = logging.getLogger(__name__)

BY_BANDIT = "the Bandit rule"
BY_TIME_LIMIT = "the sweep's time limit"


class BanditStop(TrainerCallback):
    """Applies the rule after every evaluation (one interval each, as DevLoss logs them)."""

    def __init__(self, rule: BanditRule, best: BestByInterval) -> None:
        self.rule, self.best = rule, best
        self.dev_losses: list[float] = []
        self.stopped_at: int | None = None

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        value = float((metrics or {}).get("eval_loss", math.nan))
        self.dev_losses.append(value)
        interval = len(self.dev_losses)
        if self.rule.should_stop(interval, value, self.best.best.get(interval)):
            self.stopped_at = interval
            control.should_training_stop = True


class SweepTimeLimit(WallClockLimit):
    """Stops a running trial once the sweep's clock has run out (SweepClock): from the sweep's start, not
    the trial's, and checked after every optimizer step (all DDP ranks agree, as WallClockLimit does)."""

    def __init__(self, clock: SweepClock) -> None:
        super().__init__(clock.timeout_s, clock.now)
        self.started = clock.started

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """The sweep's start stays the reference."""


@dataclass
class Trial:
    number: int
    settings: dict[str, float | int]
    dev_losses: list[float] = field(default_factory=list)  # per interval (epoch)
    stopped_early: bool = False
    stopped_by: str | None = None  # BY_BANDIT or BY_TIME_LIMIT
    dev_loss: float | None = None  # the saved model's, from its train_summary.json
    mlflow_run_id: str | None = None
    error: str | None = None  # the trial failed (as in Azure ML, the sweep goes on with the next)

    def summary(self) -> SweepTrial:
        return SweepTrial(
            trial=self.number,
            settings=self.settings,
            dev_losses=self.dev_losses,
            stopped_early=self.stopped_early,
            stopped_by=self.stopped_by,
            dev_loss=self.dev_loss,
            mlflow_run_id=self.mlflow_run_id,
            error=self.error,
        )


def choose(trials: list[Trial]) -> Trial:
    """The lowest dev loss among the trials that ran to the end (among all that wrote a model if every
    one was stopped); failed trials never."""
    written = [t for t in trials if t.error is None and t.dev_loss is not None]
    finished = [t for t in written if not t.stopped_early and math.isfinite(t.dev_loss)]
    return min(finished or written, key=lambda t: t.dev_loss if math.isfinite(t.dev_loss) else math.inf)


def evaluates_every_epoch(preset: str, best_epoch: bool | None) -> bool:
    return PRETRAINED[preset]["best_epoch"] if best_epoch is None else best_epoch


def run_sweep(
    request: TrainRequest,
    trials: int,
    space: SearchSpace,
    rule: BanditRule,
    train_trial: Callable[[TrainRequest], dict[str, Any] | None] = train,
    timeout_s: int = 0,
    now: Callable[[], float] = time.monotonic,
) -> dict[str, Any] | None:
    """Run `trials` trials and write the chosen one's model, heldout.json and train_summary.json (with a
    `sweep` section) to request.output; return that summary on rank 0 (None on the other ranks).
    A failing trial is recorded and the next one runs; the sweep fails only when every trial failed.
    `timeout_s` (0: none) limits the whole sweep by SweepClock's rule; when no trial finished before it,
    the best trial that was stopped (by it or by the Bandit rule) goes on, and the summary says so."""
    if not evaluates_every_epoch(request.preset, request.overrides.get("best_epoch")):
        raise ValueError(
            f"a sweep compares trials by their dev loss after every epoch, which preset "
            f"{request.preset!r} without --best-epoch does not evaluate: use preset default or add --best-epoch"
        )
    main = int(os.environ.get("RANK", "0")) == 0
    seed = request.overrides.get("seed")
    rng = random.Random(42 if seed is None else seed)
    best = BestByInterval()
    # Local scratch, not the output (mounted storage in AML); the same path on every DDP rank.
    scratch = checkpoint_dir(request.output).with_name(f"sweep-{checkpoint_dir(request.output).name}")
    done: list[Trial] = []
    last_error: Exception | None = None
    if main:
        shutil.rmtree(scratch, ignore_errors=True)  # a failed earlier sweep's
        use_experiment(request.experiment)
        mlflow.start_run(run_name=request.run_name or "sweep")
        mlflow.log_params(
            flat_params(
                {
                    "sweep_trials": trials,
                    "sweep_goal": GOAL,
                    "sweep_primary_metric": PRIMARY_METRIC,
                    "space": space.model_dump(),
                    "bandit": rule.model_dump(),
                }
            )
        )
    try:
        clock = SweepClock(timeout_s, now)  # from the first trial's start, as the trials are what it limits
        for number in range(1, trials + 1):
            if any_rank(clock.expired()):
                log.warning("sweep time limit of %d s passed: %d of %d trials ran", timeout_s, number - 1, trials)
                break
            trial = Trial(number, space.sample(rng))
            bandit = BanditStop(rule, best)
            time_limit = [SweepTimeLimit(clock)] if timeout_s else []
            log.info("sweep trial %d/%d: %s", number, trials, trial.settings)
            try:
                summary = train_trial(
                    replace(
                        request,
                        output=scratch / f"trial-{number}",
                        run_name=f"trial-{number}",
                        overrides={**request.overrides, **trial.settings},
                        callbacks=[bandit, *time_limit],
                    )
                )
            except Exception as error:  # noqa: BLE001 - one trial's failure (e.g. out of memory) is recorded
                trial.error, trial.dev_losses = f"{type(error).__name__}: {error}", bandit.dev_losses
                log.error("sweep trial %d/%d failed: %s", number, trials, trial.error)
                last_error = error
                done.append(trial)
                continue
            trial.dev_losses = bandit.dev_losses
            if bandit.stopped_at is not None:
                trial.stopped_by = BY_BANDIT
            elif time_limit and time_limit[0].stopped_at_step is not None:
                trial.stopped_by = BY_TIME_LIMIT
            trial.stopped_early = trial.stopped_by is not None
            for interval, value in enumerate(bandit.dev_losses, 1):
                best.report(interval, value)
            if summary is not None:
                trial.dev_loss, trial.mlflow_run_id = summary["dev_loss"], summary["mlflow_run_id"]
                mlflow.MlflowClient().set_tag(trial.mlflow_run_id, "stopped_early", str(trial.stopped_early))
                if trial.stopped_early:
                    log.warning(
                        "sweep trial %d stopped early by %s after %d evaluation(s)",
                        number,
                        trial.stopped_by,
                        len(bandit.dev_losses),
                    )
            done.append(trial)
        if last_error is not None and all(t.error for t in done):
            log.error("every one of the %d sweep trials failed", trials)
            raise last_error
        if not main:
            return None
        chosen = choose(done)
        if chosen.stopped_early:
            log.warning(
                "no sweep trial ran to its end; trial %d, stopped by %s, goes on", chosen.number, chosen.stopped_by
            )
        source = scratch / f"trial-{chosen.number}"
        request.output.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, request.output, dirs_exist_ok=True)
        summary = json.loads((source / SUMMARY).read_text(encoding="utf-8"))
        summary["sweep"] = SweepSummary(
            primary_metric=PRIMARY_METRIC,
            goal=GOAL,
            space=space.model_dump(),
            bandit=rule.model_dump(),
            chosen_trial=chosen.number,
            planned_trials=trials,
            timeout_s=timeout_s,
            mlflow_run_id=mlflow.active_run().info.run_id,
            trials=[t.summary() for t in done],
        ).model_dump()  # Python mode: a NaN dev loss stays NaN in the JSON, as before
        (request.output / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        mlflow.log_metrics(
            {
                PRIMARY_METRIC: float(chosen.dev_loss),
                "chosen_trial": float(chosen.number),
                "stopped_trials": float(sum(t.stopped_early for t in done)),
            }
        )
        mlflow.end_run()
        log.info("sweep chose trial %d of %d (dev loss %.4f)", chosen.number, trials, chosen.dev_loss)
        return summary
    except BaseException:
        if main and mlflow.active_run():
            mlflow.end_run(status="FAILED")
        raise
    finally:
        if main:
            shutil.rmtree(scratch, ignore_errors=True)
