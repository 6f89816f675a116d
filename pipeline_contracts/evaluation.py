"""evaluation.json: the evaluate step's decision on a candidate, written to the run's evaluation output.

Written by aks_jobs/lm/evaluation.py; read by both backends (a completed job's outcome), the orchestrator
(promote or reject, which model version) and, through the HTTP API, the UI.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline_contracts.model_card import ModelCard
from pipeline_contracts.train_summary import TextScoreFigures, TrainSummary

FILE_NAME = "evaluation.json"


class Score(TextScoreFigures):
    """One model's score on the held-out test text."""

    model: str  # the model folder scored (the base model's name for the baseline)


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_improvement: float = Field(ge=0)
    max_perplexity: float | None = Field(None, ge=0)


class RegisteredModel(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)  # MLflow versions: "3" or 3

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)


class Evaluation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["promote", "reject"]
    reason: str
    candidate: Score
    serving: Score | None  # None when no model was serving
    improvement: float | None  # relative drop in bits per byte against the serving model
    rules: Rules
    heldout_blocks: int = Field(ge=0)
    split: str | None  # says when the corpus was too small to hold anything out
    snapshot: str | None
    documents_sha256: str | None
    registered: RegisteredModel | None  # None with --no-register
    # The train step's summary: on AML a pipeline's outputs can be read only once it completes, so the
    # control plane takes the run's training figures from here. Left out where they are stored apart.
    training: TrainSummary | None = None
    # Defaults: evaluations written before these fields existed are still read.
    baseline: Score | None = None  # the base model on the same test text, before fine-tuning
    card: ModelCard | None = None  # the registered version's model card; None with --no-register
