"""The `aml` backend: the pipeline job on the AKS compute target, a Kubernetes online endpoint blue/green.

Every method makes a few control-plane calls and returns; long operations (jobs, deployments) are
started here and observed on later timer ticks. Only a traffic shift is waited for (seconds). Azure
errors come out as TransientBackendError or PermanentBackendError (aml_errors).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from pydantic import ValidationError

from function_app import run_choices
from function_app.backends import aml_endpoint, aml_pipeline
from function_app.backends.aml_errors import azure_errors
from function_app.backends.base import (
    Deployment,
    JobStatus,
    PermanentBackendError,
    PipelineBackend,
    SmokeTestFailed,
    TransientBackendError,
)
from function_app.run_states import DeploymentState, JobState
from function_app.settings import Settings, setting_name
from pipeline_contracts.api_requests import TrainChoices
from pipeline_contracts.evaluation import FILE_NAME as EVALUATION_FILE
from pipeline_contracts.evaluation import Evaluation
from pipeline_contracts.scoring import smoke_request, streamed_answer

if TYPE_CHECKING:
    from azure.ai.ml import Input, MLClient
    from azure.ai.ml.entities import OnlineEndpoint

_WORKSPACE_SETTINGS = ("aml_subscription_id", "aml_resource_group", "aml_workspace")
TRAFFIC_UPDATE_TIMEOUT_S = 240


def connect(settings: Settings) -> MLClient:
    """MLClient for the workspace with the Function's managed identity (DefaultAzureCredential); no network yet."""
    missing = [setting_name(field) for field in _WORKSPACE_SETTINGS if not getattr(settings, field)]
    if missing:
        raise PermanentBackendError(
            f"PIPELINE_BACKEND=aml needs {', '.join(missing)}: set them to the Azure ML "
            f"workspace's subscription id, resource group and name"
        )
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    return MLClient(
        DefaultAzureCredential(),
        subscription_id=settings.aml_subscription_id,
        resource_group_name=settings.aml_resource_group,
        workspace_name=settings.aml_workspace,
    )


class AmlBackend(PipelineBackend):
    def __init__(self, settings: Settings, ml_client: Any | None = None) -> None:
        """`ml_client`: an MLClient (or a stand-in with the same calls); by default one built from settings."""
        self._settings = settings
        self._ml = ml_client if ml_client is not None else connect(settings)
        self._endpoint_name = settings.aml_endpoint_name

    # -- pipeline job ---------------------------------------------------------------------------------

    def submit(self, run_id: str, choices: TrainChoices | None = None) -> str:
        name = aml_pipeline.pipeline_job_name(self._settings, run_id)
        with azure_errors(f"submit pipeline job {name}"):
            try:  # a retried submit (its first answer lost) must not start a second pipeline
                return self._ml.jobs.get(name).name
            except ResourceNotFoundError:
                pass
            settings = run_choices.run_settings(self._settings, choices)
            job = aml_pipeline.build_pipeline_job(settings, run_id, self._serving_model_input())
            return self._ml.jobs.create_or_update(job).name

    def job_status(self, job_id: str) -> JobStatus:
        with azure_errors(f"read pipeline job {job_id}"):
            job = self._ml.jobs.get(job_id)
            steps = self._step_jobs(job_id)
            statuses = {step: child.status for step, child in steps.items()}
            if job.status == aml_pipeline.COMPLETED:
                evaluation = self._evaluation(job_id, steps.get("evaluate"))
                # evaluate carries the train summary: the run's metrics, as the local backend reports them.
                return JobStatus(state=JobState.COMPLETED, evaluation=evaluation, training=evaluation.training)
            if job.status in aml_pipeline.FAILED_STATUSES:
                return JobStatus(state=JobState.FAILED, error=self._failure(job, steps, statuses))
            return JobStatus(state=aml_pipeline.progress_state(statuses))

    def cancel_job(self, job_id: str, reason: str) -> None:
        with azure_errors(f"cancel pipeline job {job_id} ({reason})"):
            job = self._ml.jobs.get(job_id)
            if job.status in aml_pipeline.ENDED_STATUSES:
                return
            # Not waited for: AML stops the step pods on its own; a later job_status shows Canceled.
            self._ml.jobs.begin_cancel(job_id)

    def _step_jobs(self, job_id: str) -> dict[str, Any]:
        # The SDK yields None for child jobs it cannot parse; ours carry the step name as display name.
        return {
            child.display_name: child
            for child in self._ml.jobs.list(parent_job_name=job_id)
            if child is not None and child.display_name in aml_pipeline.STEPS
        }

    def _evaluation(self, job_id: str, evaluate_job: Any) -> Evaluation:
        if evaluate_job is None:
            raise PermanentBackendError(f"pipeline job {job_id} completed without an evaluate step job")
        with tempfile.TemporaryDirectory(prefix="evaluation-") as folder:
            self._ml.jobs.download(evaluate_job.name, download_path=folder, output_name="evaluation")
            path = Path(folder, "named-outputs", "evaluation", EVALUATION_FILE)
            if not path.is_file():  # the SDK only logs a missing output and downloads nothing
                raise PermanentBackendError(
                    f"pipeline job {job_id} completed but its evaluate step "
                    f"({evaluate_job.name}) left no {EVALUATION_FILE}"
                )
            try:
                return Evaluation.model_validate_json(path.read_bytes())
            except ValidationError as err:
                raise PermanentBackendError(
                    f"{EVALUATION_FILE} of {evaluate_job.name} is not an evaluation: {err}"
                ) from err

    def _failure(self, job: Any, steps: dict[str, Any], statuses: dict[str, str]) -> str:
        step = aml_pipeline.failed_step(statuses)
        failed = steps[step] if step else job
        where = f"{step} step" if step else "pipeline job"
        reason = self._run_error(failed.name)
        link = f" ({job.studio_url})" if job.studio_url else ""
        return f"{where} {failed.status}" + (f": {reason}" if reason else "") + f" [AML job {failed.name}]{link}"

    def _run_error(self, name: str) -> str | None:
        """The run's own error message, if AML can say; only detail, so failing to read it changes nothing."""
        # azure-ai-ml's Job entities drop the run's error; the run-history client the SDK itself uses for
        # pipeline child jobs (jobs.get of a child) still returns it.
        try:
            error = self._ml.jobs._runs_operations.get_run(name).error
        except AzureError:
            return None
        root = error.error if error is not None else None
        return f"{root.code}: {root.message}" if root is not None and root.message else None

    def _serving_model_input(self) -> Input | None:
        """The registered model behind the deployment taking most traffic, as evaluate's serving_model input."""
        serving = max((d for d in self.deployments() if d.traffic > 0), key=lambda d: d.traffic, default=None)
        if serving is None:
            return None
        with azure_errors(f"look up serving model {serving.model_name}:{serving.model_version}"):
            model = self._ml.models.get(name=serving.model_name, version=serving.model_version)
        # The model's files by their storage path, as the type evaluate.yml declares (uri_folder): the same
        # input whether AML registered the folder as custom_model or mlflow_model.
        if not str(model.path or "").startswith("azureml://"):
            raise PermanentBackendError(
                f"serving model {serving.model_name}:{serving.model_version} has no "
                f"storage path ({model.path!r}); re-register it from a job output"
            )
        return aml_pipeline.serving_model_input(model.path)

    # -- endpoint and deployments ---------------------------------------------------------------------

    def begin_deploy(self, run_id: str, model_name: str, model_version: str) -> Deployment:
        name = aml_endpoint.deployment_name(model_name, model_version)
        with azure_errors(f"deploy {model_name}:{model_version} as {name}"):
            endpoint = self._ready_endpoint()
            if endpoint.traffic.get(name, 0) > 0:
                raise PermanentBackendError(
                    f"deployment {name} already serves {endpoint.traffic[name]}% of "
                    f"traffic; refusing to replace it in place"
                )
            deployment = aml_endpoint.build_deployment(self._settings, name, model_name, model_version, run_id)
            self._ml.online_deployments.begin_create_or_update(deployment)  # new pods: minutes; polled later
        return Deployment(
            name=name,
            model_name=model_name,
            model_version=str(model_version),
            scoring_url=endpoint.scoring_uri or "",
            traffic=0,
            state=DeploymentState.CREATING,
        )

    def _ready_endpoint(self) -> OnlineEndpoint:
        endpoint = self._endpoint()
        if endpoint is None:
            self._ml.online_endpoints.begin_create_or_update(aml_endpoint.build_endpoint(self._settings))
            raise TransientBackendError(
                f"creating online endpoint {self._endpoint_name} on compute "
                f"{self._settings.aml_compute}; the deployment starts once it is ready"
            )
        state = endpoint.provisioning_state
        if state in ("Failed", "Canceled"):
            raise PermanentBackendError(
                f"online endpoint {self._endpoint_name} is {state}: see it in Azure ML "
                f"studio, fix the cause, delete it, and the next deployment recreates it"
            )
        if state != "Succeeded":
            raise TransientBackendError(f"online endpoint {self._endpoint_name} is {state}; deploying when it is ready")
        return endpoint

    def deployment(self, name: str) -> Deployment:
        with azure_errors(f"read deployment {name}"):
            endpoint = self._existing_endpoint()
            return aml_endpoint.to_deployment(
                self._ml.online_deployments.get(name=name, endpoint_name=self._endpoint_name), endpoint
            )

    def smoke_test(self, name: str, prompt: str) -> str:
        """The same greedy request answered as JSON and streamed: both must give the same text."""
        text = aml_endpoint.generated_text(self._invoke(name, smoke_request(prompt)))
        streamed = self._invoke(name, smoke_request(prompt, stream=True))
        try:
            pieces, _ = streamed_answer(streamed)
        except ValueError as e:
            raise SmokeTestFailed(f"deployment {name} streamed a broken answer: {e}") from None
        if pieces[:1] != [text]:
            raise SmokeTestFailed(f"deployment {name} streamed {pieces[:1]!r}, not its JSON answer {text!r}")
        return text

    def _invoke(self, name: str, body: dict[str, Any]) -> str:
        """One scoring request to deployment `name`; the response's text (a stream's whole event text)."""
        try:
            with (
                azure_errors(f"smoke test of deployment {name}"),
                tempfile.TemporaryDirectory(prefix="smoke-") as folder,
            ):
                request = Path(folder, "request.json")
                request.write_text(json.dumps(body), encoding="utf-8")
                # deployment_name sends the request to this deployment only, whatever the traffic split.
                return self._ml.online_endpoints.invoke(
                    endpoint_name=self._endpoint_name, deployment_name=name, request_file=str(request)
                )
        except PermanentBackendError as err:  # refused for good (not found, 4xx): the test failed
            raise SmokeTestFailed(str(err)) from err

    def shift_traffic(self, name: str) -> None:
        with azure_errors(f"shift traffic to {name}"):
            endpoint = self._existing_endpoint()
            if name not in endpoint.traffic:
                raise PermanentBackendError(f"endpoint {self._endpoint_name} has no deployment {name}")
            endpoint.traffic = {other: 0 for other in endpoint.traffic} | {name: 100}
            update = self._ml.online_endpoints.begin_create_or_update(endpoint)
            # Waited for (it takes seconds): what the caller does next, pruning old deployments and
            # reporting Deployed, needs the new split in place; a delete during the update can get a 409.
            update.result(timeout=TRAFFIC_UPDATE_TIMEOUT_S)
            if not update.done():
                raise TransientBackendError(f"traffic update to {name} still running after {TRAFFIC_UPDATE_TIMEOUT_S}s")

    def delete_deployment(self, name: str) -> None:
        with azure_errors(f"delete deployment {name}"):
            endpoint = self._endpoint()
            if endpoint is None:
                return
            share = endpoint.traffic.get(name, 0)
            if share > 0:  # never take down what is serving
                raise PermanentBackendError(f"refusing to delete deployment {name}: it serves {share}% of traffic")
            try:
                self._ml.online_deployments.begin_delete(name=name, endpoint_name=self._endpoint_name)
            except ResourceNotFoundError:
                return  # already gone: deleting is idempotent

    def deployments(self) -> list[Deployment]:
        """Every deployment of the endpoint, oldest model version first."""
        with azure_errors(f"list deployments of {self._endpoint_name}"):
            endpoint = self._endpoint()
            if endpoint is None:
                return []
            found = [
                aml_endpoint.to_deployment(d, endpoint)
                for d in self._ml.online_deployments.list(endpoint_name=self._endpoint_name)
            ]
        return sorted(found, key=_version_order)

    def traffic(self) -> dict[str, int]:
        with azure_errors(f"read traffic of {self._endpoint_name}"):
            endpoint = self._endpoint()
        return {name: int(share) for name, share in (endpoint.traffic if endpoint else {}).items() if share}

    def scoring_url(self) -> str | None:
        with azure_errors(f"read endpoint {self._endpoint_name}"):
            endpoint = self._endpoint()
        if endpoint is None or not any(share > 0 for share in endpoint.traffic.values()):
            return None
        return endpoint.scoring_uri

    def _endpoint(self) -> OnlineEndpoint | None:
        try:
            return self._ml.online_endpoints.get(name=self._endpoint_name)
        except ResourceNotFoundError:
            return None

    def _existing_endpoint(self) -> OnlineEndpoint:
        endpoint = self._endpoint()
        if endpoint is None:
            raise PermanentBackendError(f"online endpoint {self._endpoint_name} does not exist (AML_ENDPOINT_NAME)")
        return endpoint


def _version_order(deployment: Deployment) -> tuple[int, str]:
    version = deployment.model_version
    return (int(version), deployment.name) if version.isdigit() else (-1, deployment.name)
