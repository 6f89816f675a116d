"""An Azure ML sweep's trials, as the evaluate step reports them.

In Azure ML each trial is its own train job writing to its own folder (aml_sweep.TRIAL_FOLDER); the sweep
node passes on only the best trial's model. So each trial keeps a TrialRecord beside its model as it goes
(settings first, then every dev loss, then its end), and evaluate gathers the records of the run's trials
folder into the same SweepSummary the local sweep writes (aks_jobs/lm/sweep_trials.py): the run row, the
UI and the model card then show the trials wherever the run ran. A trial that Azure ML cancelled (the
Bandit policy, the sweep's time limit) never finishes its record.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from pydantic import ValidationError
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from aks_jobs.lm.sweep import GOAL, PRIMARY_METRIC, SWEPT
from aks_jobs.lm.training import TrainRequest
from pipeline_contracts.train_summary import TRIAL_FILE, SweepSummary, SweepTrial, TrainSummary, TrialRecord

log = logging.getLogger(__name__)

STOPPED_BY_AZURE_ML = "Azure ML (Bandit policy or the sweep's time limit)"


class TrialRecorder(TrainerCallback):
    """Rewrites <output>/trial.json after every evaluation, so a cancelled trial leaves what it reached."""

    def __init__(self, output: Path, settings: dict[str, float | int]) -> None:
        self.path = output / TRIAL_FILE
        self.record = TrialRecord(started_utc=datetime.now(UTC).isoformat(), settings=settings)

    def write(self, **changes: Any) -> None:
        self.record = self.record.model_copy(update=changes)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A plain write: on a mounted output each close uploads the file, what a cancel must not lose.
        self.path.write_text(self.record.model_dump_json(indent=2) + "\n", encoding="utf-8")

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero:
            return
        run = mlflow.active_run()
        self.write(
            dev_losses=[*self.record.dev_losses, float((metrics or {}).get("eval_loss", math.nan))],
            mlflow_run_id=run.info.run_id if run else self.record.mlflow_run_id,
        )


def record_trial(
    train: Callable[[TrainRequest], dict[str, Any] | None], request: TrainRequest, main: bool
) -> dict[str, Any] | None:
    """Run `train(request)` as a recorded sweep trial, rank 0 writing the record: its swept
    settings first, its end (the summary's dev loss and MLflow run) or its error last."""
    settings = {name: request.overrides[name] for name in SWEPT if request.overrides.get(name) is not None}
    recorder = TrialRecorder(request.output, settings)
    if main:
        recorder.write()
    try:
        summary = train(replace(request, callbacks=[*request.callbacks, recorder]))
    except Exception as error:
        if main:
            recorder.write(error=f"{type(error).__name__}: {error}")
        raise
    if summary is not None:
        recorder.write(finished=True, dev_loss=summary["dev_loss"], mlflow_run_id=summary["mlflow_run_id"])
    return summary


def read_records(folder: Path) -> list[TrialRecord]:
    """Every trial's record under the run's trials folder, in the order the trials started; a record that
    cannot be read is logged and left out (it never hides the others)."""
    records = []
    for path in sorted(folder.rglob(TRIAL_FILE)):
        try:
            records.append(TrialRecord.model_validate_json(path.read_bytes()))
        except (OSError, ValidationError) as error:
            log.warning("left out sweep trial record %s: %s", path, error)
    return sorted(records, key=lambda r: r.started_utc)


def gather(
    folder: Path, chosen: TrainSummary, planned_trials: int | None = None, timeout_s: int | None = None
) -> SweepSummary | None:
    """The SweepSummary of the trials recorded under `folder`, `chosen` being the model the sweep passed on
    (`planned_trials`, `timeout_s`: the sweep's limits, when known); None (logged) when no record is that
    model's, since a summary must name the trial that went on."""
    records = read_records(folder)
    trials = [
        SweepTrial(
            trial=number,
            settings=record.settings,
            dev_losses=record.dev_losses,
            stopped_early=not record.finished and record.error is None,
            stopped_by=None if record.finished or record.error else STOPPED_BY_AZURE_ML,
            dev_loss=record.dev_loss,
            mlflow_run_id=record.mlflow_run_id,
            error=record.error,
        )
        for number, record in enumerate(records, 1)
    ]
    match = [
        t.trial
        for t in trials
        if t.mlflow_run_id and t.mlflow_run_id == chosen.mlflow_run_id and t.dev_loss is not None
    ]
    if not match:
        log.warning(
            "no sweep trial record under %s is the chosen model's (MLflow run %s); the run reports no sweep",
            folder,
            chosen.mlflow_run_id,
        )
        return None
    return SweepSummary(
        primary_metric=PRIMARY_METRIC,
        goal=GOAL,
        chosen_trial=match[0],
        mlflow_run_id=None,
        trials=trials,
        planned_trials=planned_trials,
        timeout_s=timeout_s,
    )
