"""The one interface the orchestrator drives; `local` and `aml` implement it.

The orchestrator (timer) owns the run state machine and the status Table. A backend only does
what the outside world does: run the pipeline job, host deployments, answer scoring requests.
Every call returns quickly; long work is started and then polled on later timer ticks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from function_app.run_states import DeploymentState, JobState
from pipeline_contracts.api_requests import TrainChoices
from pipeline_contracts.evaluation import Evaluation
from pipeline_contracts.train_summary import TrainSummary


class TransientBackendError(Exception):
    """Worth retrying with backoff (throttling, timeouts, 5xx)."""


class PermanentBackendError(Exception):
    """Retrying cannot help (bad configuration, invalid job, quota); the run fails with this reason."""


class SmokeTestFailed(PermanentBackendError):
    """The deployment cannot be promoted: it is gone, refused the request, or answered without a generation
    (or, locally, streamed a different one). Both backends raise this; the candidate is rolled back."""


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    error: str | None = None  # set when Failed: which step and why
    # Set when Completed: evaluate's evaluation.json (decision, reason, scores, registered model).
    evaluation: Evaluation | None = None
    # train_summary.json as soon as the backend can read it, for the status API.
    training: TrainSummary | None = None


@dataclass(frozen=True)
class Deployment:
    name: str
    model_name: str
    model_version: str
    scoring_url: str
    traffic: int = 0  # percent
    state: DeploymentState = DeploymentState.CREATING


class PipelineBackend(ABC):
    @abstractmethod
    def submit(self, run_id: str, choices: TrainChoices | None = None) -> str:
        """Start ONE pipeline job over every document in inputs/, trained with the run's choices (None = the
        app settings); return the job id."""

    @abstractmethod
    def job_status(self, job_id: str) -> JobStatus:
        """Where the job is now."""

    @abstractmethod
    def cancel_job(self, job_id: str, reason: str) -> None:
        """Stop the job (its compute is freed); a job that has ended already is left as it is."""

    @abstractmethod
    def begin_deploy(self, run_id: str, model_name: str, model_version: str) -> Deployment:
        """Create a new deployment of the registered model beside the current one, with 0% traffic."""

    @abstractmethod
    def deployment(self, name: str) -> Deployment:
        """Current state of one deployment (Creating until it can take requests)."""

    @abstractmethod
    def smoke_test(self, name: str, prompt: str) -> str:
        """Send a real scoring request to that deployment only; return the generated text. Raise
        TransientBackendError when it may answer later (warming up, unreachable), SmokeTestFailed otherwise."""

    @abstractmethod
    def shift_traffic(self, name: str) -> None:
        """Route 100% of the endpoint's traffic to that deployment."""

    @abstractmethod
    def delete_deployment(self, name: str) -> None:
        """Remove a deployment (a failed candidate, or one older than the rollback target)."""

    @abstractmethod
    def deployments(self) -> list[Deployment]:
        """Every deployment of the endpoint with its traffic share."""

    @abstractmethod
    def traffic(self) -> dict[str, int]:
        """The endpoint's real traffic split right now: deployment name -> percent (only shares above 0)."""

    @abstractmethod
    def scoring_url(self) -> str | None:
        """The stable URL clients call (routes by traffic), or None before the first deployment."""
