"""MLflow: where runs go, per-step training metrics, and registering a model folder.

In AML jobs MLFLOW_TRACKING_URI points at the workspace (azureml-mlflow); locally the default is an
sqlite store under <repo>/.local/mlflow with artifacts beside it. A sqlite store given by URI keeps its
artifacts beside the database too, so tests and local runs never write into the working directory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from aks_jobs.lm.sweep import PRIMARY_METRIC

log = logging.getLogger(__name__)

LOCAL_STORE = Path(__file__).resolve().parents[2] / ".local" / "mlflow"
SQLITE = "sqlite:///"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"{SQLITE}{LOCAL_STORE / 'mlflow.db'}"


def _sqlite_folder(uri: str) -> Path | None:
    return Path(uri.removeprefix(SQLITE)).parent if uri.startswith(SQLITE) else None


def use_experiment(name: str) -> None:
    """Point MLflow at the tracking store and make `name` the active experiment.

    In an AML job MLFLOW_RUN_ID names the step's own run (in the pipeline's experiment), which
    mlflow.start_run() resumes; setting another experiment would make it refuse that run.
    """
    uri = tracking_uri()
    folder = _sqlite_folder(uri)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    if os.environ.get("MLFLOW_RUN_ID"):
        log.info("MLflow: logging into the job's run %s", os.environ["MLFLOW_RUN_ID"])
        return
    if mlflow.get_experiment_by_name(name) is None:
        location = (folder / "artifacts" / name).resolve().as_uri() if folder is not None else None
        try:
            mlflow.create_experiment(name, artifact_location=location)
        except MlflowException:  # created meanwhile by a concurrent run
            if mlflow.get_experiment_by_name(name) is None:
                raise
    mlflow.set_experiment(name)
    log.info("MLflow: experiment %s at %s", name, uri if folder is not None else "MLFLOW_TRACKING_URI")


def flat_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts as dotted keys; None as an empty string (MLflow params are strings)."""
    params: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            params.update(flat_params(value, f"{prefix}{key}."))
        else:
            params[f"{prefix}{key}"] = "" if value is None else str(value)
    return params


class StepMetrics(TrainerCallback):
    """Every Trainer log (loss, learning rate, grad norm, eval loss, ...) as MLflow metrics at its step.

    Not transformers' MLflowCallback: that one logs every TrainingArguments field and the model config
    as params and starts its own run; this one logs into the run train.py opened, from rank 0 only.
    """

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or mlflow.active_run() is None or not logs:
            return
        metrics = {
            key: float(value)
            for key, value in logs.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        if metrics:
            mlflow.log_metrics(metrics, step=state.global_step)


class DevLoss(TrainerCallback):
    """Each evaluation's loss as the sweep's primary metric, one value per evaluation (an epoch, as the
    default preset evaluates): Azure ML's sweep counts each logged value as one interval of its
    early-termination policy and ranks trials by it."""

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or mlflow.active_run() is None or not metrics:
            return
        intervals = sum(1 for entry in state.log_history if "eval_loss" in entry)
        mlflow.log_metric(PRIMARY_METRIC, float(metrics["eval_loss"]), step=intervals)


def register_folder(name: str, artifact_path: str, tags: Mapping[str, str]) -> str:
    """Register the active run's `artifact_path` folder as a new version of `name`; return the version.

    mlflow.register_model("runs:/<id>/model") in MLflow 3 accepts only MLflow-format models (an MLmodel
    file or a logged model); this is a plain save_pretrained() folder that score.py loads, so the version
    is created from the run's artifact location directly, which is what register_model does for
    MLflow-format models too.
    """
    client = mlflow.MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    run = mlflow.active_run()
    version = client.create_model_version(
        name, source=mlflow.get_artifact_uri(artifact_path), run_id=run.info.run_id, tags=dict(tags)
    )
    return str(version.version)
