"""What the control plane's HTTP API (function_app/api.py) answers; the UI's api_client reads the same models.

Run and document states are the words of function_app.run_states and function_app.document_retries.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline_contracts.api_requests import Preset, TrainChoices
from pipeline_contracts.evaluation import Evaluation


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Health(_Answer):
    status: str
    backend: str


class ActiveRun(_Answer):
    id: str
    step: str  # the run's state
    since: str  # when it entered it


class LastRun(_Answer):
    id: str
    state: str
    error: str | None


class Rollback(_Answer):
    at: str
    by: str  # who or what asked (POST /api/rollback's requested_by)
    from_deployment: str  # the deployment the traffic left


class ServingModel(_Answer):
    name: str
    version: str
    deployment: str
    rollback_deployment: str | None
    last_rollback: Rollback | None = None  # the last rollback through the API


class RolledBack(_Answer):
    serving: str  # the deployment serving now
    replaced: str  # the one that served before: the next rollback target
    model_name: str
    model_version: str
    run: str | None  # the run whose model serves again
    at: str
    requested_by: str


class Problem(_Answer):
    """A blob under inputs/ that could not be recorded."""

    name: str
    etag: str
    reason: str
    seen_at: str


class Status(_Answer):
    state: str  # Idle | In progress | New model deployed | Failed
    active_run: ActiveRun | None
    last_run: LastRun | None
    serving_model: ServingModel | None
    scoring_url: str | None
    pending_documents: int = Field(ge=0)  # untrained, waiting for a later run
    failed_documents: int = Field(ge=0)  # failed past the retry cap
    problem_documents: list[Problem]
    updated_at: str | None


class RunSummary(_Answer):
    id: str
    state: str
    trigger: str
    created_at: str
    updated_at: str
    documents: int = Field(ge=0)
    new_documents: int = Field(ge=0)
    model_version: str | None
    perplexity: float | None
    error: str | None


class RunsPage(_Answer):
    runs: list[RunSummary]
    next: str | None  # the cursor (`before`) of the following page; None at the end


class Transition(_Answer):
    state: str
    at: str
    detail: str = ""


class RunEvent(_Answer):
    at: str
    event: str
    detail: str = ""


class RunDetail(_Answer):
    id: str
    state: str
    created_at: str
    trigger: str
    train: TrainChoices | None  # the training choices the run used; None for runs recorded before them
    updated_at: str
    job_id: str
    error: str
    transitions: list[Transition]
    documents: list[str]
    new_documents: list[str]
    new_contents: list[str]
    # train_summary.json's figures as soon as the job reports them, and `extraction`: the snapshot's totals.
    metrics: dict[str, Any]
    # None until evaluate has decided; a dict for runs stored before evaluation.json had its present fields.
    evaluation: Evaluation | dict[str, Any] | None
    snapshot: str
    model_name: str
    model_version: str
    deployment: str
    deploy_started_at: str
    retry: dict[str, Any]  # {attempts, next_attempt_at, last_error} while a step is being retried
    events: list[RunEvent]


class RetrainQueued(_Answer):
    run: str
    state: str
    detail: str


class PresetValues(_Answer):
    epochs: float
    learning_rate: float


class RetrainDefaults(_Answer):
    """GET /api/retrain: what POST /api/retrain with an empty body would train with (the app settings), and
    for each preset the epochs and learning rate a run with that preset gets when they are left unset."""

    preset: Preset
    base_model: str
    sweep_trials: int
    epochs: float
    learning_rate: float
    presets: dict[Preset, PresetValues]


class RunCancelled(_Answer):
    run: str
    state: str
    error: str | None


class FirstRun(_Answer):
    id: str
    state: str | None


class Document(_Answer):
    name: str
    etag: str
    sha256: str
    version: int
    bytes: int
    uploaded_at: str
    recorded_at: str
    same_content_as: list[str]  # other names with the same content
    attempts: int
    retry_at: str
    last_error: str
    extraction: str  # the manifest's status (ok | warning | error), "" before a run extracted it
    messages: list[str]
    snapshot: str
    pages: int | None  # None until a run has extracted it
    chars: int | None
    state: str  # function_app.document_retries' words
    first_run: FirstRun | None  # the run that first trained on it
    active_run: str | None  # the active run's id while it is in that run


class Documents(_Answer):
    documents: list[Document]


class DocumentRemoved(_Answer):
    name: str
    state: str
    detail: str
