"""The aml backend's Azure ML entities, checked offline by azure-ai-ml itself (validate, serialize, construct)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from function_app.backends import aml_endpoint, aml_pipeline
from function_app.backends.aml import AmlBackend
from function_app.backends.base import PermanentBackendError
from function_app.settings import Settings, SettingsError
from local_stack import components as local_components
from tests.contract_samples import score_response

IMAGE = "gpt2acr.azurecr.io/gpt2-pdf-jobs:7"
SETTINGS = Settings(
    aml_subscription_id="00000000-0000-0000-0000-000000000000",
    aml_resource_group="rg-gpt2",
    aml_workspace="ws-gpt2",
    aml_environment_image=IMAGE,
    base_model="offline",
    train_preset="memorize",
)
DS = "azureml://datastores/gpt2_training_data/paths"


@pytest.fixture(scope="module")
def job():
    serving = aml_pipeline.serving_model_input("azureml://datastores/workspaceblobstore/paths/models/gpt2-pdf/4/")
    return aml_pipeline.build_pipeline_job(SETTINGS, "20261123T101500Z", serving)


def test_pipeline_job_passes_azure_ml_validation(job):
    result = job._validate()
    assert result.passed, result.error_messages


def test_pipeline_job_runs_on_the_aks_compute_with_data_from_the_datastore(job):
    spec = job._to_dict()
    assert spec["settings"] == {"default_compute": "azureml:aks-compute-target", "force_rerun": True}
    assert (spec["name"], spec["display_name"], spec["experiment_name"]) == (
        "gpt2-pdf-20261123T101500Z",
        "20261123T101500Z",
        "gpt2-pdf",
    )
    assert spec["tags"] == {"run_id": "20261123T101500Z"}
    assert spec["inputs"]["documents"] == {"type": "uri_folder", "path": f"{DS}/inputs/", "mode": "ro_mount"}
    steps = spec["jobs"]
    assert list(steps) == ["preprocess", "train", "evaluate"]
    assert steps["preprocess"]["outputs"]["processed"] == {
        "type": "uri_folder",
        "path": f"{DS}/processed/",
        "mode": "rw_mount",
    }
    assert steps["train"]["inputs"]["processed"] == {"path": "${{parent.jobs.preprocess.outputs.processed}}"}
    # Train reads the snapshot preprocess names in the run's own folder, where the control plane reads it too.
    assert steps["preprocess"]["outputs"]["snapshot"] == {
        "type": "uri_folder",
        "path": f"{DS}/runs/20261123T101500Z/snapshot/",
    }
    assert steps["train"]["inputs"]["snapshot"] == {"path": "${{parent.jobs.preprocess.outputs.snapshot}}"}
    assert steps["train"]["outputs"]["model"] == {"type": "uri_folder", "path": f"{DS}/runs/20261123T101500Z/model/"}
    assert steps["evaluate"]["inputs"]["model"] == {"path": "${{parent.jobs.train.outputs.model}}"}
    assert steps["evaluate"]["outputs"]["evaluation"] == {
        "type": "uri_folder",
        "path": f"{DS}/runs/20261123T101500Z/evaluation/",
    }


def test_each_step_gets_its_instance_type_and_the_image(job):
    steps = job._to_dict()["jobs"]
    assert steps["preprocess"]["resources"] == {"instance_type": "cpu-small"}
    assert steps["train"]["resources"] == {"instance_count": 1, "instance_type": "gpu-t4"}
    assert steps["evaluate"]["resources"] == {"instance_type": "cpu-small"}
    assert steps["train"]["distribution"] == {"type": "pytorch", "process_count_per_instance": 1}
    assert {step["environment"]["image"] for step in steps.values()} == {IMAGE}
    # Child jobs are found by these (the REST body carries them; _to_dict leaves node display names out).
    assert {name: node.display_name for name, node in job.jobs.items()} == {
        "preprocess": "preprocess",
        "train": "train",
        "evaluate": "evaluate",
    }


def test_settings_choose_base_model_preset_and_the_serving_model(job):
    steps = job._to_dict()["jobs"]
    assert steps["train"]["inputs"]["base_model"] == "offline"
    assert steps["train"]["inputs"]["preset"] == "memorize"
    assert steps["evaluate"]["inputs"]["serving_model"] == {
        "type": "uri_folder",
        "path": "azureml://datastores/workspaceblobstore/paths/models/gpt2-pdf/4/",
    }
    assert steps["evaluate"]["inputs"]["model_name"] == "gpt2-pdf"


def test_without_serving_model_or_image_the_components_defaults_stay():
    job = aml_pipeline.build_pipeline_job(Settings(), "first run", None)
    assert job._validate().passed
    spec = job._to_dict()
    assert spec["name"] == "gpt2-pdf-first-run"
    assert "serving_model" not in spec["jobs"]["evaluate"]["inputs"]
    assert all("environment" not in step for step in spec["jobs"].values())
    assert {step["component"]["environment"] for step in spec["jobs"].values()} == {"azureml:gpt2-pdf-jobs@latest"}


def test_each_build_sees_the_environment_as_declared_even_after_a_submit_resolved_one(job):
    # Submitting resolves each node's component environment to a concrete version in place (azure-ai-ml
    # 1.35 operations/_component_operations.py, _resolve_dependencies_for_component); do what it does.
    declared = aml_pipeline.registered_environment()
    first = aml_pipeline.build_pipeline_job(Settings(), "first", None)
    assert {node.component.environment for node in first.jobs.values()} == {declared}
    for node in first.jobs.values():
        node.component.environment = (
            "azureml:/subscriptions/s/resourceGroups/r/providers/"
            "Microsoft.MachineLearningServices/workspaces/w/environments/gpt2-pdf-jobs/versions/old"
        )
    second = aml_pipeline.build_pipeline_job(Settings(), "second", None)
    assert {node.component.environment for node in second.jobs.values()} == {declared}
    assert aml_pipeline.registered_environment() == declared


def test_train_epochs_setting_overrides_the_preset_and_must_be_a_number():
    job = aml_pipeline.build_pipeline_job(Settings.from_env({"TRAIN_EPOCHS": "2"}), "r1", None)
    assert job._validate().passed
    assert job._to_dict()["jobs"]["train"]["inputs"]["epochs"] == 2.0
    assert "epochs" not in aml_pipeline.build_pipeline_job(Settings(), "r1", None)._to_dict()["jobs"]["train"]["inputs"]
    with pytest.raises(SettingsError, match="TRAIN_EPOCHS='many' is not a number; set it to e.g. 3"):
        Settings.from_env({"TRAIN_EPOCHS": "many"})


def test_limit_settings_reach_the_preprocess_and_train_steps_of_both_backends(tmp_path):
    from local_stack.backend import LocalBackend
    from local_stack.pipeline_job import JobSpec

    settings = Settings(
        preprocess_max_document_chars=5000,
        preprocess_max_corpus_chars=90000,
        preprocess_max_chars_per_byte=40,
        train_max_wall_s=600,
        local_work_dir=str(tmp_path),
    )
    job = aml_pipeline.build_pipeline_job(settings, "r1", None)
    assert job._validate().passed
    jobs = job._to_dict()["jobs"]
    assert {k: jobs["preprocess"]["inputs"][k] for k in settings.preprocess_limits()} == {
        "max_document_chars": 5000,
        "max_corpus_chars": 90000,
        "max_chars_per_byte": 40,
    }
    assert jobs["train"]["inputs"]["max_wall_s"] == 600 and "max_steps" not in jobs["train"]["inputs"]  # 0: none
    # The local backend runs the same component command lines with the same values.
    backend = LocalBackend(settings)
    backend._spawn = lambda argv, log_path: {"pid": 0}  # the job process itself is not what is tested here
    spec = JobSpec.read(tmp_path / "jobs" / backend.submit("r1"))
    argv = local_components.load("preprocess").argv(
        {"documents": "/in", **spec.preprocess_inputs}, {"processed": "/p", "snapshot": "/s"}
    )
    assert (
        argv[argv.index("--max-chars-per-byte") + 1] == "40" and argv[argv.index("--max-document-chars") + 1] == "5000"
    )
    train = local_components.load("train").argv({"processed": "/p", **spec.train_inputs}, {"model": "/m"})
    assert train[train.index("--max-wall-s") + 1] == "600" and "--max-steps" not in train


def test_a_run_id_without_letters_or_digits_is_refused():
    with pytest.raises(PermanentBackendError, match="run id"):
        aml_pipeline.build_pipeline_job(SETTINGS, "//", None)


def test_step_statuses_map_onto_job_states():
    assert aml_pipeline.progress_state({}) == "Submitted"
    assert aml_pipeline.progress_state({"preprocess": "Queued"}) == "Preprocessing"
    assert aml_pipeline.progress_state({"preprocess": "Completed", "train": "Preparing"}) == "Training"
    assert (
        aml_pipeline.progress_state({"preprocess": "Completed", "train": "Completed", "evaluate": "Running"})
        == "Evaluating"
    )
    assert aml_pipeline.failed_step({"preprocess": "Completed", "train": "Failed", "evaluate": "Canceled"}) == "train"
    assert aml_pipeline.failed_step({"preprocess": "Completed", "train": "Running"}) is None


def test_endpoint_is_a_kubernetes_endpoint_with_token_auth():
    spec = aml_endpoint.build_endpoint(SETTINGS)._to_dict()
    assert (spec["name"], spec["compute"], spec["auth_mode"]) == ("gpt2-pdf", "azureml:aks-compute-target", "aml_token")
    assert spec["traffic"] == {}


def test_deployment_serves_the_registered_model_with_score_py():
    deployment = aml_endpoint.build_deployment(SETTINGS, "gpt2-pdf-v12", "gpt2-pdf", "12", "run-7")
    spec = deployment._to_dict()
    assert spec["type"] == "kubernetes"
    assert (spec["name"], spec["endpoint_name"], spec["model"]) == ("gpt2-pdf-v12", "gpt2-pdf", "azureml:gpt2-pdf:12")
    assert spec["code_configuration"] == {"code": str(aml_pipeline.AKS_JOBS_DIR), "scoring_script": "score.py"}
    assert spec["environment"]["image"] == IMAGE
    # A custom image must still tell AML where azmlinfsrv listens (declared in aks_jobs/environment.yml).
    assert spec["environment"]["inference_config"]["scoring_route"] == {"port": 5001, "path": "/score"}
    assert (spec["instance_type"], spec["instance_count"]) == ("cpu-small", 1)
    # One threaded server process: concurrent requests reach it together and share decode steps; it takes 48
    # at once (threads to spare for the probes) and answers within the endpoint's timeout. It must listen on
    # every interface in its container (no loopback config), unlike local servers.
    assert spec["environment_variables"] == {
        "MODEL_NAME": "gpt2-pdf",
        "MODEL_VERSION": "12",
        "WORKER_COUNT": "1",
        "GUNICORN_CMD_ARGS": "--threads 64",
        "SCORING_MAX_REQUESTS": "48",
        "SCORING_REQUEST_TIMEOUT_S": "55",
    }
    assert spec["request_settings"] == {"request_timeout_ms": 60000, "max_concurrent_requests_per_instance": 48}
    assert spec["liveness_probe"]["initial_delay"] == 60 and spec["liveness_probe"]["failure_threshold"] == 30
    assert spec["readiness_probe"]["initial_delay"] == 30
    assert spec["tags"] == {"run_id": "run-7", "model_name": "gpt2-pdf", "model_version": "12"}
    # What goes over the wire: instance count becomes the SKU capacity, durations ISO 8601.
    rest = deployment._to_rest_object(location="westeurope").as_dict()
    assert rest["sku"] == {"name": "Default", "capacity": 1}
    assert rest["properties"]["endpointComputeType"] == "Kubernetes"
    assert rest["properties"]["livenessProbe"]["initialDelay"] == "PT1M"
    assert (aml_pipeline.AKS_JOBS_DIR / "components").is_dir()


def test_deployment_uses_the_components_environment_without_an_image_setting():
    deployment = aml_endpoint.build_deployment(Settings(), "gpt2-pdf-v1", "gpt2-pdf", "1", "r")
    assert deployment._to_dict()["environment"] == "azureml:gpt2-pdf-jobs@latest"


@pytest.mark.parametrize(
    "model_name, version, expected",
    [
        ("gpt2-pdf", "12", "gpt2-pdf-v12"),
        ("GPT2_PDF", "3", "gpt2-pdf-v3"),
        ("2nd model", "1", "nd-model-v1"),
        ("a-very-long-model-name-for-the-pdf-corpus", "123", "a-very-long-model-name-for-v123"),
    ],
)
def test_deployment_names_are_valid_and_at_most_32_characters(model_name, version, expected):
    assert aml_endpoint.deployment_name(model_name, version) == expected
    assert len(expected) <= 32


def test_model_references_from_the_service_are_parsed():
    arm = (
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/"
        "models/gpt2-pdf/versions/12"
    )
    assert aml_endpoint.model_of(arm) == ("gpt2-pdf", "12")
    assert aml_endpoint.model_of("azureml:gpt2-pdf:3") == ("gpt2-pdf", "3")
    assert aml_endpoint.model_of("something else") == ("unknown", "unknown")


@pytest.mark.parametrize(
    "response, text",
    [
        (score_response(" the harbour closes at dusk."), " the harbour closes at dusk."),
        (json.dumps(score_response("twice encoded")), "twice encoded"),  # run()'s JSON text, encoded once more
    ],
)
def test_generated_text_reads_the_scoring_response(response, text):
    assert aml_endpoint.generated_text(response) == text


@pytest.mark.parametrize(
    "response",
    [
        '{"generations": []}',
        '{"generations": ["flat"]}',
        score_response("")[:-1],
        score_response("x").replace('[["x"]]', "[[]]"),
        '{"error": "boom"}',
        "<html>502</html>",
        "[1, 2]",
    ],
)
def test_a_response_without_generations_fails_the_smoke_test(response):
    with pytest.raises(PermanentBackendError, match="without generations"):
        aml_endpoint.generated_text(response)


def test_constructor_builds_a_real_ml_client_offline():
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    backend = AmlBackend(SETTINGS)
    client = backend._ml
    assert isinstance(client, MLClient)
    assert isinstance(client._credential, DefaultAzureCredential)
    assert (client.subscription_id, client.resource_group_name, client.workspace_name) == (
        "00000000-0000-0000-0000-000000000000",
        "rg-gpt2",
        "ws-gpt2",
    )


def test_constructor_names_the_missing_workspace_settings():
    with pytest.raises(PermanentBackendError, match="AML_SUBSCRIPTION_ID, AML_WORKSPACE"):
        AmlBackend(Settings(aml_resource_group="rg-gpt2"))


def test_importing_the_backend_does_not_import_azure_ai_ml():
    code = (
        "import sys; import function_app.backends.aml; "
        "assert 'azure.ai.ml' not in sys.modules, 'azure.ai.ml imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=aml_pipeline.AKS_JOBS_DIR.parent)
