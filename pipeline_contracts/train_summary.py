"""train_summary.json: what the train step did and how the model scored, beside the model it wrote.

Written by aks_jobs/lm/training.py; read by the evaluate step (which carries it in evaluation.json), the
backends (a run's metrics) and, through the HTTP API, the UI (figures and the loss curve).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline_contracts.document_kinds import Kind

FILE_NAME = "train_summary.json"
TRIAL_FILE = "trial.json"  # an Azure ML sweep trial's TrialRecord, beside its model


class BaseModelUsed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requested: str
    resolved: str
    kind: str


class BlockCounts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: int = Field(ge=0)
    eval: int = Field(ge=0)  # test blocks (heldout.json): what the gate and the registry report
    dev: int | None = Field(None, ge=0)  # dev blocks, which pick the best epoch; None in older summaries
    split: str | None = None  # how the split was made, and the fallback when the corpus was too small


class TextScoreFigures(BaseModel):
    """A model's score on the test text (aks_jobs.lm.perplexity.TextScore)."""

    model_config = ConfigDict(extra="forbid")

    loss: float
    perplexity: float
    bits_per_byte: float
    tokens: int = Field(ge=0)
    bytes: int = Field(ge=0)


class SystemSample(BaseModel):
    """One sample of MLflow's system-metrics monitor during training (aks_jobs.lm.system_metrics)."""

    model_config = ConfigDict(extra="forbid")

    s: float  # seconds since the first sample
    cpu_percent: float | None = None
    memory_mb: float | None = None
    gpu_percent: float | None = None  # GPU 0, where there is one
    gpu_memory_mb: float | None = None


class SweepTrial(BaseModel):
    """One trial of a sweep (aks_jobs/lm/sweep_trials.py Trial.summary, aks_jobs/lm/trial_record.py gather)."""

    model_config = ConfigDict(extra="forbid")

    trial: int = Field(ge=1)
    settings: dict[str, float | int]
    dev_losses: list[float]  # per epoch, as the Bandit rule saw them
    stopped_early: bool
    dev_loss: float | None  # the saved model's; None when the trial failed
    mlflow_run_id: str | None
    error: str | None
    stopped_by: str | None = None  # what stopped it early: the Bandit rule, the sweep's time limit (or Azure ML)


class TrialRecord(BaseModel):
    """What an Azure ML sweep trial writes to its own output as it goes (train.py --trial-record): the
    evaluate step gathers them into the SweepSummary. A trial Azure ML cancels (its Bandit policy, the
    sweep's timeout) never finishes its record, which is how evaluate tells it was stopped."""

    model_config = ConfigDict(extra="forbid")

    started_utc: str
    settings: dict[str, float | int]
    dev_losses: list[float] = Field(default_factory=list)
    finished: bool = False
    dev_loss: float | None = None  # the saved model's, once finished
    mlflow_run_id: str | None = None
    error: str | None = None


class SweepSummary(BaseModel):
    """What a sweep tried and which trial's model went on (present only when the train step swept)."""

    model_config = ConfigDict(extra="forbid")

    primary_metric: str
    goal: str
    # The search space and rule; None where the trials were gathered from their records (Azure ML), whose
    # pipeline job carries both in its sweep node.
    space: dict[str, Any] | None = None
    bandit: dict[str, Any] | None = None
    chosen_trial: int = Field(ge=1)
    mlflow_run_id: str | None
    trials: list[SweepTrial]
    # How many trials were asked for and the sweep's time limit (0: none): fewer trials than planned ran
    # when the limit passed first. None where not known (gathered from Azure ML trial records).
    planned_trials: int | None = Field(None, ge=1)
    timeout_s: int | None = Field(None, ge=0)


class TrainSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snapshot: str
    snapshot_path: str
    documents_sha256: str | None
    documents: int = Field(ge=0)
    base_model: BaseModelUsed
    preset: str
    hyperparameters: dict[str, Any]
    train_loss: float
    final_loss: float | None
    # The trained model on the test blocks (heldout.json); dev_loss is on the dev blocks that chose the epoch.
    eval_loss: float
    perplexity: float
    eval_bits_per_byte: float
    eval_tokens: int = Field(ge=0)
    steps: int = Field(ge=0)
    epochs: float | None
    train_tokens: int = Field(ge=0)
    tokens_per_s: float | None
    train_runtime_s: float
    wall_s: float
    device: str
    ddp_backend: str | None
    precision: str
    attention: str
    execution: dict[str, Any]
    blocks: BlockCounts
    mlflow_run_id: str | None
    log_history: list[dict[str, Any]]  # the UI's loss curve, capped
    stopped_early: str | None = None  # why training ended before its plan (max steps, wall-clock limit)
    # Defaults: summaries written before these fields existed are still read.
    dev_loss: float | None = None
    baseline: TextScoreFigures | None = None  # the base model on the same test blocks, before training
    system_metrics: list[SystemSample] = Field(default_factory=list)
    sweep: SweepSummary | None = None  # the trials, when the train step ran a sweep
    kinds: list[Kind] = Field(default_factory=list)  # document kinds the model's tokenizer has a token for
