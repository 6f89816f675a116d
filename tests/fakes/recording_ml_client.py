"""RecordingMLClient: a stand-in for azure.ai.ml.MLClient, the project's only fake (Azure is unreachable here).

It offers the calls the aml backend makes, with MLClient's signatures, answers with real azure-ai-ml entities
(and azure-core exceptions, as the SDK raises them), and records EVERY call as a Call(operation, args), with
entities as their `_to_dict()`: tests assert exactly what would have been sent to Azure.

What the service would do on its own, the test scripts: job and step statuses, outputs, the provisioning
state of endpoints and deployments, scoring responses, and failures (`fail_next`), either between calls or
from `on_call`, which sees every call before it is answered (tests/fakes/aml_service.py plays a workspace
moving on by itself that way). Like the service, it answers a deployment's model as an ARM id, fills the
endpoint's traffic map with 0 for every deployment, refuses to delete a deployment that takes traffic, and
lets jobs be downloaded only once they have ended.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.ai.ml._restclient.runhistory.models import RootError, Run, RunHistoryErrorResponse
from azure.ai.ml.entities import JobService, KubernetesOnlineDeployment, KubernetesOnlineEndpoint, Model
from azure.ai.ml.entities._job.base_job import _BaseJob
from azure.ai.ml.exceptions import ErrorTarget, JobException, ValidationException
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.polling import LROPoller, NoPolling

from pipeline_contracts.scoring import ScoreResponse, StreamPiece

ENDED = ("Completed", "Failed", "Canceled", "NotResponding", "Paused")  # azure-ai-ml's terminal statuses
READS = ("get", "list", "get_run", "download")


def http_error(status: int, message: str = "error from the fake service") -> HttpResponseError:
    """An HttpResponseError as azure-core raises it for that HTTP status."""
    error = HttpResponseError(message=f"({status}) {message}\nCode: {status}\nMessage: {message}")
    error.status_code = status
    return error


@dataclass
class Call:
    operation: str  # "jobs.create_or_update", "online_endpoints.invoke", ...
    args: dict[str, Any]  # by MLClient's parameter names; entities as their _to_dict()
    payload: Any = None  # what a file argument held (invoke's request_file), read at call time


@dataclass
class _Job:
    name: str
    display_name: str | None
    tags: dict
    status: str = "NotStarted"
    steps: dict[str, str] = field(default_factory=dict)  # step (child display name) -> status
    errors: dict[str, str] = field(default_factory=dict)  # step or "pipeline" -> error message


class RecordingMLClient:
    def __init__(
        self,
        subscription_id: str = "00000000-0000-0000-0000-000000000000",
        resource_group_name: str = "rg-gpt2",
        workspace_name: str = "ws-gpt2",
    ) -> None:
        self.subscription_id = subscription_id
        self.resource_group_name = resource_group_name
        self.workspace_name = workspace_name
        self.calls: list[Call] = []
        self.jobs = _Jobs(self)
        self.online_endpoints = _OnlineEndpoints(self)
        self.online_deployments = _OnlineDeployments(self)
        self.models = _Models(self)
        self._failures: dict[str, list[tuple[Exception, bool]]] = {}
        self._armed_by: list[tuple[str, str, Exception, bool]] = []  # (after, operation, error, applied)
        # Sees each call (operation, args) before it is recorded and answered: the service moving on.
        self.on_call: Callable[[str, dict[str, Any]], None] | None = None
        self._jobs: dict[str, _Job] = {}
        self._outputs: dict[tuple[str, str], dict[str, Any]] = {}
        self._models: dict[tuple[str, str], str] = {}
        self._endpoint: KubernetesOnlineEndpoint | None = None
        self._deployments: dict[str, Any] = {}
        self._responses: dict[str, str | Exception] = {}
        self._streams: dict[str, str | None] = {}

    # -- what was sent ------------------------------------------------------------------------------

    def operations(self) -> list[str]:
        return [call.operation for call in self.calls]

    def writes(self) -> list[str]:
        """Operations other than reads: what changed (or, for invoke, exercised) something in Azure."""
        return [op for op in self.operations() if op.rsplit(".", 1)[1] not in READS]

    def last(self, operation: str) -> Call:
        """The latest call of `operation`."""
        return next(call for call in reversed(self.calls) if call.operation == operation)

    # -- scripting the service ----------------------------------------------------------------------

    def fail_next(self, operation: str, error: Exception, *, applied: bool = False, after: str | None = None) -> None:
        """The next `operation` call raises `error`; `applied`: after taking effect (the answer was lost).

        `after`: only an `operation` call made once an `after` call has been made, e.g. the first endpoint
        read after the traffic update."""
        if after is None:
            self._failures.setdefault(operation, []).append((error, applied))
        else:
            self._armed_by.append((after, operation, error, applied))

    def script_job(
        self, name: str, status: str, steps: dict[str, str] | None = None, errors: dict[str, str] | None = None
    ) -> None:
        job = self._jobs[name]
        job.status = status
        job.steps.update(steps or {})
        job.errors.update(errors or {})

    def set_output(self, job_name: str, output_name: str, files: dict[str, Any]) -> None:
        """Files (name -> text, or a dict written as JSON) of a job's named output."""
        self._outputs[(job_name, output_name)] = files

    @staticmethod
    def child_name(parent: str, step: str) -> str:
        return f"{parent}-{step}"

    def register_model(self, name: str, version: str, model_type: str = "custom_model") -> None:
        self._models[(name, str(version))] = model_type

    def add_endpoint(self, name: str, compute: str = "aks-compute-target", state: str = "Succeeded") -> None:
        self._endpoint = KubernetesOnlineEndpoint(
            name=name,
            compute=compute,
            auth_mode="aml_token",
            scoring_uri=f"https://aks.example/api/v1/endpoint/{name}/score",
            provisioning_state=state,
        )

    def set_endpoint_state(self, state: str) -> None:
        self._endpoint._provisioning_state = state

    def set_scoring_uri(self, uri: str) -> None:
        """Azure assigns the endpoint's URI; a test points it at a real local scoring server."""
        self._endpoint._scoring_uri = uri

    def endpoint_state(self) -> str | None:
        """The endpoint's provisioning state, None while there is no endpoint."""
        return self._endpoint.provisioning_state if self._endpoint else None

    def add_deployment(
        self, name: str, model_name: str, model_version: str, traffic: int = 0, state: str = "Succeeded"
    ) -> None:
        self._store_deployment(
            KubernetesOnlineDeployment(
                name=name, endpoint_name=self._endpoint.name, model=f"azureml:{model_name}:{model_version}"
            ),
            state,
        )
        if traffic:
            self._endpoint.traffic[name] = traffic

    def set_deployment_state(self, name: str, state: str) -> None:
        self._deployments[name]._provisioning_state = state

    def deployment_state(self, name: str) -> str | None:
        """That deployment's provisioning state, None if there is no such deployment."""
        return self._deployments[name].provisioning_state if name in self._deployments else None

    def job_names(self) -> list[str]:
        """Every pipeline job created, in order."""
        return list(self._jobs)

    def job_status(self, name: str) -> str:
        return self._jobs[name].status

    def traffic(self) -> dict[str, int]:
        return dict(self._endpoint.traffic) if self._endpoint else {}

    def deployment_names(self) -> list[str]:
        return sorted(self._deployments)

    def respond(self, deployment: str, answer: str | Exception, *, stream: str | None = None) -> None:
        """What invoking that deployment returns (response text) or raises; `stream`, what a streamed request
        returns (by default the answer's own events)."""
        self._responses[deployment] = answer
        self._streams[deployment] = stream

    # -- internals shared by the operation groups ---------------------------------------------------

    def _record(self, operation: str, payload: Any = None, **args: Any) -> Exception | None:
        """Record the call; raise a scripted failure now, or return one to raise once the call took effect."""
        if self.on_call is not None:
            self.on_call(operation, args)
        self.calls.append(Call(operation, args, payload))
        failures = self._failures.get(operation)
        failure = failures.pop(0) if failures else None
        for armed in [armed for armed in self._armed_by if armed[0] == operation]:
            self._armed_by.remove(armed)
            self._failures.setdefault(armed[1], []).append(armed[2:])
        if failure is None:
            return None
        error, applied = failure
        if not applied:
            raise error
        return error

    def _arm_id(self, kind: str, name: str, version: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group_name}/providers/"
            f"Microsoft.MachineLearningServices/workspaces/{self.workspace_name}/{kind}/{name}/versions/{version}"
        )

    def _store_deployment(self, deployment: Any, state: str) -> None:
        stored = copy.deepcopy(deployment)
        model = str(stored.model)
        if model.startswith("azureml:") and model.count(":") == 2:  # the service answers ARM ids
            _, name, version = model.split(":")
            stored.model = self._arm_id("models", name, version)
        stored._provisioning_state = state
        self._deployments[stored.name] = stored

    def _require_endpoint(self, name: str) -> KubernetesOnlineEndpoint:
        if self._endpoint is None or self._endpoint.name != name:
            raise ResourceNotFoundError(
                f"(UserError) Online endpoint {name} not found in workspace {self.workspace_name}"
            )
        return self._endpoint

    def _require_deployment(self, name: str, endpoint_name: str) -> Any:
        self._require_endpoint(endpoint_name)
        if name not in self._deployments:
            raise ResourceNotFoundError(f"(UserError) Deployment {name} not found on endpoint {endpoint_name}")
        return self._deployments[name]


def _done(result: Any) -> LROPoller:
    """A poller that has finished (azure-core's own NoPolling): the service accepted the request."""
    return LROPoller(None, result, lambda response: response, NoPolling())


def _raise(error: Exception | None) -> None:
    if error is not None:
        raise error


class _Jobs:
    def __init__(self, fake: RecordingMLClient) -> None:
        self._fake = fake
        self._runs_operations = _RunOperations(fake)

    def create_or_update(self, job: Any, **kwargs: Any) -> Any:
        fake = self._fake
        failure = fake._record("jobs.create_or_update", job=job._to_dict(), **kwargs)
        job.name = job.name or f"job-{len(fake._jobs) + 1}"
        fake._jobs[job.name] = _Job(name=job.name, display_name=job.display_name, tags=dict(job.tags or {}))
        _raise(failure)
        job._status = "NotStarted"
        return job

    def begin_cancel(self, name: str, **kwargs: Any) -> LROPoller:
        failure = self._fake._record("jobs.begin_cancel", name=name, **kwargs)
        job = self._job(name)
        if job.status not in ENDED:  # the service cancels the pipeline and its running steps
            job.status = "Canceled"
            job.steps = {step: ("Canceled" if status not in ENDED else status) for step, status in job.steps.items()}
        _raise(failure)
        return _done(None)

    def get(self, name: str) -> _BaseJob:
        _raise(self._fake._record("jobs.get", name=name))
        return self._entity(name)

    def list(self, *, parent_job_name: str | None = None, **kwargs: Any) -> list[_BaseJob]:
        _raise(self._fake._record("jobs.list", parent_job_name=parent_job_name, **kwargs))
        job = self._job(parent_job_name)
        return [
            _BaseJob(name=self._fake.child_name(job.name, step), display_name=step, status=status)
            for step, status in job.steps.items()
        ]

    def download(
        self, name: str, *, download_path: str = ".", output_name: str | None = None, all: bool = False
    ) -> None:  # noqa: A002 - MLClient's own keyword
        _raise(
            self._fake._record(
                "jobs.download", name=name, download_path=str(download_path), output_name=output_name, all=all
            )
        )
        status = self._entity(name).status
        if status not in ENDED:
            raise JobException(
                message=f"This job is in state {status}. Download is allowed only in states {list(ENDED)}",
                no_personal_data_message="job not ended",
                target=ErrorTarget.JOB,
            )
        # Like the SDK: a missing output downloads nothing and raises nothing.
        for file_name, content in self._fake._outputs.get((name, output_name), {}).items():
            path = Path(download_path, "named-outputs", output_name, file_name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")

    def _job(self, name: str) -> _Job:
        if name not in self._fake._jobs:
            raise ResourceNotFoundError(f"(UserError) Job {name} not found")
        return self._fake._jobs[name]

    def _entity(self, name: str) -> _BaseJob:
        for job in self._fake._jobs.values():
            for step, status in job.steps.items():
                if self._fake.child_name(job.name, step) == name:
                    return _BaseJob(name=name, display_name=step, status=status)
        job = self._job(name)
        studio = JobService(endpoint=f"https://ml.azure.com/runs/{name}")
        return _BaseJob(
            name=name, display_name=job.display_name, status=job.status, tags=job.tags, services={"Studio": studio}
        )


class _RunOperations:
    """jobs._runs_operations: run history, where a failed run's error message lives."""

    def __init__(self, fake: RecordingMLClient) -> None:
        self._fake = fake

    def get_run(self, run_id: str) -> Run:
        _raise(self._fake._record("jobs._runs_operations.get_run", run_id=run_id))
        for job in self._fake._jobs.values():
            for key in (*job.steps, "pipeline"):
                name = job.name if key == "pipeline" else self._fake.child_name(job.name, key)
                if name == run_id and key in job.errors:
                    return Run(
                        run_id=run_id,
                        error=RunHistoryErrorResponse(error=RootError(code="UserError", message=job.errors[key])),
                    )
        return Run(run_id=run_id)


class _OnlineEndpoints:
    def __init__(self, fake: RecordingMLClient) -> None:
        self._fake = fake

    def get(self, name: str, *, local: bool = False) -> KubernetesOnlineEndpoint:
        _raise(self._fake._record("online_endpoints.get", name=name))
        endpoint = copy.deepcopy(self._fake._require_endpoint(name))
        for deployment in self._fake._deployments:  # the SDK lists deployments and adds them with 0
            endpoint.traffic.setdefault(deployment, 0)
        return endpoint

    def begin_create_or_update(self, endpoint: KubernetesOnlineEndpoint, *, local: bool = False) -> LROPoller:
        fake = self._fake
        failure = fake._record("online_endpoints.begin_create_or_update", endpoint=endpoint._to_dict())
        traffic = {name: share for name, share in endpoint.traffic.items() if share}  # the SDK strips zeros
        if fake._endpoint is None:
            # A new endpoint takes a while; the test says when it is ready (set_endpoint_state).
            fake.add_endpoint(endpoint.name, compute=endpoint.compute, state="Creating")
        unknown = set(traffic) - set(fake._deployments)
        if unknown:
            raise http_error(400, f"traffic names deployments that do not exist: {sorted(unknown)}")
        fake._endpoint.traffic = traffic
        _raise(failure)
        return _done(copy.deepcopy(fake._endpoint))

    def invoke(
        self, endpoint_name: str, *, request_file: str | None = None, deployment_name: str | None = None, **kwargs: Any
    ) -> str:
        request = json.loads(Path(request_file).read_text(encoding="utf-8"))
        _raise(
            self._fake._record(
                "online_endpoints.invoke",
                payload=request,
                endpoint_name=endpoint_name,
                request_file=request_file,
                deployment_name=deployment_name,
                **kwargs,
            )
        )
        self._fake._require_endpoint(endpoint_name)
        if deployment_name not in self._fake._deployments:  # the SDK checks this itself
            raise ValidationException(
                message=f"Deployment name {deployment_name} not found for this endpoint",
                no_personal_data_message="Deployment name not found for this endpoint",
                target=ErrorTarget.ONLINE_ENDPOINT,
            )
        answer = self._fake._responses.get(deployment_name)
        if answer is None:
            raise AssertionError(f"the test scripted no response for deployment {deployment_name} (respond())")
        _raise(answer if isinstance(answer, Exception) else None)
        if request.get("stream"):
            return self._fake._streams.get(deployment_name) or _as_stream(answer)
        return answer


class _OnlineDeployments:
    def __init__(self, fake: RecordingMLClient) -> None:
        self._fake = fake

    def begin_create_or_update(self, deployment: Any, **kwargs: Any) -> LROPoller:
        failure = self._fake._record(
            "online_deployments.begin_create_or_update", deployment=deployment._to_dict(), **kwargs
        )
        self._fake._require_endpoint(deployment.endpoint_name)  # the SDK gets the endpoint first
        self._fake._store_deployment(deployment, "Creating")
        _raise(failure)
        return _done(copy.deepcopy(self._fake._deployments[deployment.name]))

    def get(self, name: str, endpoint_name: str, *, local: bool = False) -> Any:
        _raise(self._fake._record("online_deployments.get", name=name, endpoint_name=endpoint_name))
        return copy.deepcopy(self._fake._require_deployment(name, endpoint_name))

    def list(self, endpoint_name: str, *, local: bool = False) -> list[Any]:
        _raise(self._fake._record("online_deployments.list", endpoint_name=endpoint_name))
        self._fake._require_endpoint(endpoint_name)
        return [copy.deepcopy(d) for d in self._fake._deployments.values()]

    def begin_delete(self, name: str, endpoint_name: str, *, local: bool = False) -> LROPoller:
        fake = self._fake
        failure = fake._record("online_deployments.begin_delete", name=name, endpoint_name=endpoint_name)
        fake._require_deployment(name, endpoint_name)
        if fake._endpoint.traffic.get(name):
            raise http_error(400, f"deployment {name} takes traffic; set its traffic to 0 before deleting it")
        del fake._deployments[name]
        _raise(failure)
        return _done(None)


class _Models:
    def __init__(self, fake: RecordingMLClient) -> None:
        self._fake = fake

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Model:
        _raise(self._fake._record("models.get", name=name, version=version, label=label))
        model_type = self._fake._models.get((name, str(version)))
        if model_type is None:
            raise ResourceNotFoundError(f"(UserError) Model {name}:{version} not found")
        return Model(
            name=name,
            version=str(version),
            type=model_type,
            path=f"azureml://datastores/workspaceblobstore/paths/models/{name}/{version}/",
        )


def _as_stream(answer: str) -> str:
    """A scripted JSON answer as the scoring server streams it (one event per generation, then `done`); anything
    that is not a scoring answer comes back as it is. invoke() returns the response's whole text
    (azure-ai-ml operations/_online_endpoint_operations.py: `return str(response.text())`)."""
    try:
        parsed = ScoreResponse.model_validate_json(answer)
    except ValueError:
        return answer
    pieces = [
        StreamPiece(index=i, prompt=p, sequence=s, text=text).model_dump_json()
        for i, (p, s, text) in enumerate(
            (p, s, text) for p, texts in enumerate(parsed.generations) for s, text in enumerate(texts)
        )
    ]
    return "".join(f"data: {piece}\n\n" for piece in pieces) + f"event: done\ndata: {answer}\n\n"
