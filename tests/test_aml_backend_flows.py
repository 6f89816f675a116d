"""The aml backend driven through its API against RecordingMLClient: exactly which Azure calls each flow makes."""

from __future__ import annotations

import inspect

import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError

from function_app.backends.aml import AmlBackend
from function_app.backends.base import Deployment, JobStatus, PermanentBackendError, TransientBackendError
from function_app.settings import Settings
from pipeline_contracts.evaluation import Evaluation
from pipeline_contracts.train_summary import TrainSummary
from tests.contract_samples import evaluation, score_response
from tests.fakes.recording_ml_client import RecordingMLClient, http_error

SETTINGS = Settings(
    aml_subscription_id="00000000-0000-0000-0000-000000000000",
    aml_resource_group="rg-gpt2",
    aml_workspace="ws-gpt2",
    aml_environment_image="gpt2acr.azurecr.io/gpt2-pdf-jobs:7",
)
RUN = "20261123T101500Z"
JOB = f"gpt2-pdf-{RUN}"
SCORE_URL = "https://aks.example/api/v1/endpoint/gpt2-pdf/score"
PROMOTE = evaluation(
    "promote",
    candidate=12.1,
    serving=30.4,
    reason="perplexity 12.1 < 30.4 of the serving model",
    registered={"name": "gpt2-pdf", "version": "3"},
)
REJECT = PROMOTE | {"decision": "reject", "reason": "perplexity 41.0 is not below 30.4", "registered": None}
ANSWER = score_response(" the harbour closes at dusk.")


@pytest.fixture
def fake() -> RecordingMLClient:
    """A workspace where v2 serves all traffic and v1 is kept for rollback."""
    fake = RecordingMLClient()
    fake.add_endpoint("gpt2-pdf")
    fake.add_deployment("gpt2-pdf-v1", "gpt2-pdf", "1")
    fake.add_deployment("gpt2-pdf-v2", "gpt2-pdf", "2", traffic=100)
    fake.register_model("gpt2-pdf", "2", "mlflow_model")
    return fake


@pytest.fixture
def backend(fake: RecordingMLClient) -> AmlBackend:
    return AmlBackend(SETTINGS, ml_client=fake)


def run_pipeline_to_the_end(fake: RecordingMLClient, backend: AmlBackend, evaluation: dict) -> JobStatus:
    """Submit, then walk the job through its steps as AML would, checking what job_status says at each."""
    job_id = backend.submit(RUN)
    assert job_id == JOB
    assert backend.job_status(job_id) == JobStatus(state="Submitted")
    fake.script_job(job_id, "Running", {"preprocess": "Running"})
    assert backend.job_status(job_id).state == "Preprocessing"
    fake.script_job(job_id, "Running", {"preprocess": "Completed", "train": "Queued"})
    assert backend.job_status(job_id).state == "Training"
    fake.script_job(job_id, "Running", {"train": "Completed", "evaluate": "Running"})
    assert backend.job_status(job_id).state == "Evaluating"
    fake.script_job(job_id, "Completed", {"evaluate": "Completed"})
    fake.set_output(fake.child_name(job_id, "evaluate"), "evaluation", {"evaluation.json": evaluation})
    return backend.job_status(job_id)


def test_success_submits_deploys_smoke_tests_shifts_traffic_and_prunes(fake, backend):
    status = run_pipeline_to_the_end(fake, backend, PROMOTE)
    # The train summary evaluate carries is the run's training figures.
    assert status == JobStatus(
        state="Completed",
        evaluation=Evaluation.model_validate(PROMOTE),
        training=TrainSummary.model_validate(PROMOTE["training"]),
    )

    candidate = backend.begin_deploy(RUN, "gpt2-pdf", "3")
    assert candidate == Deployment(
        name="gpt2-pdf-v3", model_name="gpt2-pdf", model_version="3", scoring_url=SCORE_URL, traffic=0, state="Creating"
    )
    assert backend.deployment("gpt2-pdf-v3").state == "Creating"
    fake.set_deployment_state("gpt2-pdf-v3", "Succeeded")
    assert backend.deployment("gpt2-pdf-v3").state == "Ready"
    fake.respond("gpt2-pdf-v3", ANSWER)
    assert backend.smoke_test("gpt2-pdf-v3", "The harbour") == " the harbour closes at dusk."
    backend.shift_traffic("gpt2-pdf-v3")
    backend.delete_deployment("gpt2-pdf-v1")  # older than the rollback target (v2)

    assert fake.writes() == [
        "jobs.create_or_update",
        "online_deployments.begin_create_or_update",
        "online_endpoints.invoke",  # the smoke request as JSON
        "online_endpoints.invoke",  # and streamed
        "online_endpoints.begin_create_or_update",
        "online_deployments.begin_delete",
    ]
    json_call, stream_call = [c for c in fake.calls if c.operation == "online_endpoints.invoke"]
    assert (json_call.args["endpoint_name"], json_call.args["deployment_name"]) == ("gpt2-pdf", "gpt2-pdf-v3")
    assert json_call.payload == {"prompt": "The harbour", "max_new_tokens": 20, "do_sample": False}
    assert stream_call.payload == {**json_call.payload, "stream": True}
    assert fake.last("online_endpoints.begin_create_or_update").args["endpoint"]["traffic"] == {
        "gpt2-pdf-v1": 0,
        "gpt2-pdf-v2": 0,
        "gpt2-pdf-v3": 100,
    }
    assert fake.traffic() == {"gpt2-pdf-v3": 100}
    assert fake.last("online_deployments.begin_delete").args == {"name": "gpt2-pdf-v1", "endpoint_name": "gpt2-pdf"}
    assert [(d.name, d.model_version, d.traffic, d.state) for d in backend.deployments()] == [
        ("gpt2-pdf-v2", "2", 0, "Ready"),
        ("gpt2-pdf-v3", "3", 100, "Ready"),
    ]
    assert backend.scoring_url() == SCORE_URL


def test_submit_sends_the_pipeline_with_the_serving_model_to_compare_against(fake, backend):
    backend.submit(RUN)
    sent = fake.last("jobs.create_or_update").args["job"]
    assert sent["name"] == JOB and sent["display_name"] == RUN
    assert sent["settings"]["default_compute"] == "azureml:aks-compute-target"
    # v2's files by their storage path, typed as evaluate.yml declares serving_model (test below).
    assert sent["jobs"]["evaluate"]["inputs"]["serving_model"] == {
        "type": "uri_folder",
        "path": "azureml://datastores/workspaceblobstore/paths/models/gpt2-pdf/2/",
    }
    assert fake.last("models.get").args == {"name": "gpt2-pdf", "version": "2", "label": None}


@pytest.mark.parametrize("model_type", ["mlflow_model", "custom_model"])
def test_the_serving_model_input_has_the_type_evaluate_declares_whatever_the_registry_type(model_type):
    fake = RecordingMLClient()
    fake.add_endpoint("gpt2-pdf")
    fake.add_deployment("gpt2-pdf-v2", "gpt2-pdf", "2", traffic=100)
    fake.register_model("gpt2-pdf", "2", model_type)
    AmlBackend(SETTINGS, ml_client=fake).submit(RUN)
    sent = fake.last("jobs.create_or_update").args["job"]["jobs"]["evaluate"]
    declared = sent["component"]["inputs"]["serving_model"]["type"]
    assert sent["inputs"]["serving_model"]["type"] == declared


def test_first_run_has_no_serving_model_and_creates_the_endpoint_when_deploying():
    fake = RecordingMLClient()
    backend = AmlBackend(SETTINGS, ml_client=fake)
    backend.submit(RUN)
    assert "serving_model" not in fake.last("jobs.create_or_update").args["job"]["jobs"]["evaluate"]["inputs"]
    assert backend.scoring_url() is None and backend.deployments() == []

    with pytest.raises(TransientBackendError, match="creating online endpoint gpt2-pdf"):
        backend.begin_deploy(RUN, "gpt2-pdf", "1")
    with pytest.raises(TransientBackendError, match="is Creating"):
        backend.begin_deploy(RUN, "gpt2-pdf", "1")
    fake.set_endpoint_state("Succeeded")
    assert backend.begin_deploy(RUN, "gpt2-pdf", "1").name == "gpt2-pdf-v1"

    assert fake.writes() == [
        "jobs.create_or_update",
        "online_endpoints.begin_create_or_update",
        "online_deployments.begin_create_or_update",
    ]
    endpoint = fake.last("online_endpoints.begin_create_or_update").args["endpoint"]
    assert (endpoint["name"], endpoint["compute"], endpoint["auth_mode"]) == (
        "gpt2-pdf",
        "azureml:aks-compute-target",
        "aml_token",
    )
    deployment = fake.last("online_deployments.begin_create_or_update").args["deployment"]
    assert (deployment["model"], deployment["instance_type"]) == ("azureml:gpt2-pdf:1", "cpu-small")
    assert deployment["code_configuration"]["scoring_script"] == "score.py"
    assert fake.traffic() == {}  # a new deployment takes no traffic until it is promoted


def test_failed_smoke_test_deletes_the_candidate_and_leaves_traffic_alone(fake, backend):
    backend.begin_deploy(RUN, "gpt2-pdf", "3")
    fake.set_deployment_state("gpt2-pdf-v3", "Succeeded")
    fake.respond("gpt2-pdf-v3", '{"error": "init() failed: no config.json"}')
    with pytest.raises(PermanentBackendError, match="without generations"):
        backend.smoke_test("gpt2-pdf-v3", "The harbour")
    backend.delete_deployment("gpt2-pdf-v3")

    assert fake.writes() == [
        "online_deployments.begin_create_or_update",
        "online_endpoints.invoke",
        "online_deployments.begin_delete",
    ]
    assert fake.traffic() == {"gpt2-pdf-v2": 100}
    assert fake.deployment_names() == ["gpt2-pdf-v1", "gpt2-pdf-v2"]


def test_rejected_candidate_touches_no_endpoint(fake, backend):
    status = run_pipeline_to_the_end(fake, backend, REJECT)
    assert status.state == "Completed" and status.evaluation.decision == "reject"
    assert status.evaluation.registered is None
    submitted = fake.operations().index("jobs.create_or_update")
    # Before submitting, the serving model was read; after it, only the job was.
    assert all(op.startswith("jobs.") for op in fake.operations()[submitted:])
    assert fake.writes() == ["jobs.create_or_update"]
    assert fake.traffic() == {"gpt2-pdf-v2": 100}


def test_failed_step_is_reported_with_the_error_from_run_history(fake, backend):
    job_id = backend.submit(RUN)
    fake.script_job(
        job_id,
        "Failed",
        {"preprocess": "Completed", "train": "Failed", "evaluate": "Canceled"},
        errors={"train": "Execution failed. User process 'python' exited with status code 1: CUDA out of memory."},
    )
    status = backend.job_status(job_id)
    assert status.state == "Failed"
    assert status.error.startswith("train step Failed: UserError: Execution failed.")
    assert "CUDA out of memory." in status.error
    assert f"[AML job {fake.child_name(job_id, 'train')}]" in status.error
    assert f"https://ml.azure.com/runs/{job_id}" in status.error


def test_a_pipeline_that_fails_before_any_step_reports_its_own_error(fake, backend):
    job_id = backend.submit(RUN)
    fake.script_job(job_id, "Failed", errors={"pipeline": "InstanceType gpu-t4 not found on compute"})
    assert backend.job_status(job_id).error.startswith(
        "pipeline job Failed: UserError: InstanceType gpu-t4 not found on compute"
    )


def test_canceled_pipeline_is_failed(fake, backend):
    job_id = backend.submit(RUN)
    fake.script_job(job_id, "Canceled", {"preprocess": "Canceled"})
    status = backend.job_status(job_id)
    assert status.state == "Failed" and status.error.startswith("preprocess step Canceled")


def test_completed_job_without_evaluation_json_is_a_permanent_error(fake, backend):
    job_id = backend.submit(RUN)
    fake.script_job(job_id, "Completed", {"preprocess": "Completed", "train": "Completed", "evaluate": "Completed"})
    with pytest.raises(PermanentBackendError, match="left no evaluation.json"):
        backend.job_status(job_id)


def test_retried_submit_finds_the_job_instead_of_starting_a_second(fake, backend):
    fake.fail_next("jobs.create_or_update", ServiceResponseError("connection reset"), applied=True)
    with pytest.raises(TransientBackendError, match="ServiceResponseError"):
        backend.submit(RUN)
    assert backend.submit(RUN) == JOB
    assert fake.writes() == ["jobs.create_or_update"]


@pytest.mark.parametrize(
    "error",
    [
        http_error(429, "Too many requests"),
        http_error(503, "Service unavailable"),
        http_error(409, "Endpoint gpt2-pdf is being updated"),
        ServiceRequestError("Name or service not known"),
        ServiceResponseError("Read timed out"),
    ],
)
def test_throttling_outages_and_timeouts_are_transient(fake, backend, error):
    fake.fail_next("jobs.create_or_update", error)
    with pytest.raises(TransientBackendError, match=f"submit pipeline job {JOB}"):
        backend.submit(RUN)


@pytest.mark.parametrize(
    "error, reason",
    [
        (ClientAuthenticationError("(AuthorizationFailed) no access"), "AzureML Data Scientist"),
        (http_error(400, "InstanceType gpu-t4 is not defined"), "HTTP 400 .*InstanceType gpu-t4"),
        (http_error(403, "Forbidden"), "HTTP 403"),
    ],
)
def test_bad_configuration_is_permanent_with_a_readable_reason(fake, backend, error, reason):
    fake.fail_next("online_deployments.begin_create_or_update", error)
    with pytest.raises(PermanentBackendError, match=reason):
        backend.begin_deploy(RUN, "gpt2-pdf", "3")


def test_missing_resources_and_sdk_validation_are_permanent(fake, backend):
    with pytest.raises(PermanentBackendError, match="read deployment gpt2-pdf-v9: not found"):
        backend.deployment("gpt2-pdf-v9")
    with pytest.raises(PermanentBackendError, match="Deployment name gpt2-pdf-v9 not found"):
        backend.smoke_test("gpt2-pdf-v9", "The harbour")
    with pytest.raises(PermanentBackendError, match="has no deployment gpt2-pdf-v9"):
        backend.shift_traffic("gpt2-pdf-v9")


def test_smoke_test_against_a_warming_deployment_is_transient(fake, backend):
    fake.respond("gpt2-pdf-v2", http_error(502, "upstream connect error"))
    with pytest.raises(TransientBackendError, match="HTTP 502"):
        backend.smoke_test("gpt2-pdf-v2", "The harbour")


def test_the_serving_deployment_is_never_deleted_or_replaced(fake, backend):
    with pytest.raises(PermanentBackendError, match="serves 100% of traffic"):
        backend.delete_deployment("gpt2-pdf-v2")
    with pytest.raises(PermanentBackendError, match="refusing to replace it"):
        backend.begin_deploy(RUN, "gpt2-pdf", "2")
    backend.delete_deployment("gpt2-pdf-v7")  # already gone: nothing to do
    assert fake.writes() == ["online_deployments.begin_delete"]
    assert fake.traffic() == {"gpt2-pdf-v2": 100}
    assert fake.deployment_names() == ["gpt2-pdf-v1", "gpt2-pdf-v2"]


def test_failed_deployment_is_reported_as_failed(fake, backend):
    backend.begin_deploy(RUN, "gpt2-pdf", "3")
    fake.set_deployment_state("gpt2-pdf-v3", "Failed")
    assert backend.deployment("gpt2-pdf-v3").state == "Failed"


def test_failed_endpoint_stops_deploying_with_what_to_do(fake, backend):
    fake.set_endpoint_state("Failed")
    with pytest.raises(PermanentBackendError, match="gpt2-pdf is Failed: .*delete it"):
        backend.begin_deploy(RUN, "gpt2-pdf", "3")
    assert fake.writes() == []


def test_every_call_the_backend_makes_fits_the_real_ml_client(fake, backend):
    """The fake records by MLClient's parameter names; each call must bind to the real operation's signature."""
    from azure.ai.ml.operations import (
        JobOperations,
        ModelOperations,
        OnlineDeploymentOperations,
        OnlineEndpointOperations,
    )
    from azure.ai.ml.operations._run_operations import RunOperations

    real = {
        "jobs": JobOperations,
        "jobs._runs_operations": RunOperations,
        "models": ModelOperations,
        "online_endpoints": OnlineEndpointOperations,
        "online_deployments": OnlineDeploymentOperations,
    }
    run_pipeline_to_the_end(fake, backend, PROMOTE)
    fake.register_model("gpt2-pdf", "3")  # what evaluate did
    backend.begin_deploy(RUN, "gpt2-pdf", "3")
    fake.set_deployment_state("gpt2-pdf-v3", "Succeeded")
    fake.respond("gpt2-pdf-v3", ANSWER)
    backend.deployment("gpt2-pdf-v3")
    backend.smoke_test("gpt2-pdf-v3", "The harbour")
    backend.shift_traffic("gpt2-pdf-v3")
    backend.delete_deployment("gpt2-pdf-v1")
    backend.deployments()
    failing = backend.submit("another run")
    fake.script_job(failing, "Failed", {"preprocess": "Failed"}, errors={"preprocess": "no document gave text"})
    backend.job_status(failing)

    assert len(set(fake.operations())) == 13
    for call in fake.calls:
        group, method = call.operation.rsplit(".", 1)
        inspect.signature(getattr(real[group], method)).bind(None, **call.args)  # None: self
