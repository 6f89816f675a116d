"""The AML pipeline job built from aks_jobs/components/*.yml, and how its step jobs map onto job states.

azure-ai-ml is imported inside the functions: importing it costs seconds and pulls OpenTelemetry, which
must not happen when the Functions worker indexes the app.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from aks_jobs.lm.sweep import SWEPT
from function_app.backends import aml_sweep
from function_app.backends.base import PermanentBackendError
from function_app.run_states import JobState
from function_app.settings import Settings
from pipeline_contracts import blob_layout
from pipeline_contracts.blob_layout import (
    EVALUATION_OUTPUT,
    INPUTS,
    MODEL_OUTPUT,
    PROCESSED,
    RUNS,
    SNAPSHOT_REF_OUTPUT,
    run_output,
)

if TYPE_CHECKING:
    from azure.ai.ml import Input
    from azure.ai.ml.entities import Command, CommandComponent, Environment, PipelineJob
    from azure.ai.ml.entities import Sweep as SweepNode

# aks_jobs/ is also the code snapshot the components (`code: ..`) and the scoring deployment upload.
AKS_JOBS_DIR = Path(__file__).resolve().parents[2] / "aks_jobs"
COMPONENTS_DIR = AKS_JOBS_DIR / "components"

# Node names, component file stems and child-job display names are the same words.
STEPS = ("preprocess", "train", "evaluate")
STEP_STATES = {"preprocess": JobState.PREPROCESSING, "train": JobState.TRAINING, "evaluate": JobState.EVALUATING}
# AML job statuses after which a job never runs again (Paused can be resumed, so it is not here).
FAILED_STATUSES = frozenset({"Failed", "Canceled", "NotResponding"})
COMPLETED = "Completed"
ENDED_STATUSES = FAILED_STATUSES | {COMPLETED}

# Where the steps write in the data container (pipeline_contracts.blob_layout): snapshots under processed/,
# each run's snapshot reference, model and evaluation under runs/<id>/. Jobs write through the compute's
# managed identity, whose role condition (infra/modules/roles.bicep, parameters from infra/main.bicep)
# allows writes only under these prefixes;
# tests/test_infra.py checks that the Bicep condition names exactly these and that every output bound
# below lies under one of them.
COMPUTE_WRITABLE_PREFIXES = (PROCESSED, RUNS)


def datastore_uri(datastore: str, path: str) -> str:
    return f"azureml://datastores/{datastore}/paths/{path}"


def safe_run_id(run_id: str) -> str:
    """run_id as one path segment / job-name part: letters, digits, '_' and '-' only."""
    cleaned = blob_layout.safe_run_id(run_id)
    if not cleaned:
        raise PermanentBackendError(f"run id {run_id!r} has no letters or digits; use e.g. a UTC timestamp")
    return cleaned


def pipeline_job_name(settings: Settings, run_id: str) -> str:
    """Deterministic job name, so a retried submit finds the job it already started instead of a second one."""
    return f"{settings.model_name}-{safe_run_id(run_id)}"


def load_step(step: str) -> CommandComponent:
    """A fresh component on every call, never a cached one: submitting a job resolves its component's
    environment (azureml:gpt2-pdf-jobs@latest) to a version IN PLACE (azure-ai-ml 1.35
    operations/_component_operations.py, _resolve_dependencies_for_component), so a cached object would
    keep the first image a warm Function instance saw."""
    from azure.ai.ml import load_component

    return load_component(source=COMPONENTS_DIR / f"{step}.yml")


def serving_model_input(path: str) -> Input:
    """evaluate's serving_model input for a model folder, typed as the component declares it."""
    from azure.ai.ml import Input

    return Input(type=load_step("evaluate").inputs["serving_model"].type, path=path)


def registered_environment() -> str:
    """The environment the components name (one image serves every step and scoring)."""
    return load_step("preprocess").environment


def image_environment(image: str) -> Environment:
    """An anonymous environment for an explicit image (AML_ENVIRONMENT_IMAGE).

    Keeps the scoring routes aks_jobs/environment.yml declares: without them AML does not know where
    the custom image's azmlinfsrv listens and online deployments never become ready.
    """
    from azure.ai.ml import load_environment
    from azure.ai.ml.entities import Environment

    declared = load_environment(source=AKS_JOBS_DIR / "environment.yml")
    return Environment(image=image, inference_config=declared.inference_config)


def build_pipeline_job(settings: Settings, run_id: str, serving_model: Input | None) -> PipelineJob:
    """preprocess -> train -> evaluate over every PDF in inputs/, on the AKS compute target.

    `serving_model` is the registered model now serving (evaluate compares the candidate with it), or None.
    """
    from azure.ai.ml import Input, Output
    from azure.ai.ml.dsl import pipeline

    preprocess_step, train_step, evaluate_step = (load_step(step) for step in STEPS)
    datastore = settings.aml_datastore
    safe_run_id(run_id)  # refuses an id with nothing left to name the run's folder
    image = image_environment(settings.aml_environment_image) if settings.aml_environment_image else None
    evaluate_inputs = {"serving_model": serving_model} if serving_model is not None else {}
    train_overrides = {
        name: value
        for name, value in (("epochs", settings.train_epochs), ("learning_rate", settings.train_learning_rate))
        if value
    }
    train_overrides.update(settings.train_limits())
    sweep = settings.sweep()
    if sweep is not None:  # the search space sets these per trial; each trial keeps its record for evaluate
        train_overrides = {name: value for name, value in train_overrides.items() if name not in SWEPT}
        train_overrides.update(aml_sweep.TRIAL_RECORD)
        evaluate_inputs.update(
            trials=Input(
                type="uri_folder", path=datastore_uri(datastore, run_output(run_id, aml_sweep.TRIALS)), mode="ro_mount"
            ),
            sweep_trials=sweep.limits.max_total_trials,
            sweep_timeout_s=sweep.limits.timeout_s,
        )

    @pipeline(
        name="gpt2_pdf_pipeline",
        description="PDFs -> text snapshot -> fine-tuned GPT-2 -> evaluated, registered",
        default_compute=settings.aml_compute,
    )
    def gpt2_pdf_pipeline(documents):  # un-annotated: @pipeline reads annotations as AML input types
        preprocess = preprocess_step(documents=documents, **settings.preprocess_limits())
        # Bound to processed/ itself (not a per-job folder): earlier snapshots and the sha256 cache stay there.
        preprocess.outputs.processed = Output(
            type="uri_folder", path=datastore_uri(datastore, PROCESSED), mode="rw_mount"
        )
        preprocess.outputs.snapshot = Output(
            type="uri_folder", path=datastore_uri(datastore, run_output(run_id, SNAPSHOT_REF_OUTPUT))
        )
        train = train_step(
            processed=preprocess.outputs.processed,
            snapshot=preprocess.outputs.snapshot,
            base_model=settings.base_model,
            preset=settings.train_preset,
            **train_overrides,
        )
        model_output = MODEL_OUTPUT
        if sweep is not None:
            train, model_output = aml_sweep.sweep_node(train, sweep), aml_sweep.TRIAL_FOLDER.rstrip("/")
        train.outputs.model = Output(type="uri_folder", path=datastore_uri(datastore, run_output(run_id, model_output)))
        evaluate = evaluate_step(model=train.outputs.model, model_name=settings.model_name, **evaluate_inputs)
        evaluate.outputs.evaluation = Output(
            type="uri_folder", path=datastore_uri(datastore, run_output(run_id, EVALUATION_OUTPUT))
        )
        # Not a loop: @pipeline names each node after the local variable that holds it.
        _place(preprocess, "preprocess", settings.aml_cpu_instance_type, image)
        _place(train, "train", settings.aml_gpu_instance_type, image)
        _place(evaluate, "evaluate", settings.aml_cpu_instance_type, image)

    job = gpt2_pdf_pipeline(documents=Input(type="uri_folder", path=datastore_uri(datastore, INPUTS), mode="ro_mount"))
    job.name = pipeline_job_name(settings, run_id)
    job.display_name = run_id
    job.experiment_name = settings.model_name
    job.tags = {"run_id": run_id}
    # Reuse is keyed on input PATHS, not their content: without this AML would reuse the last preprocess
    # job (same inputs/ path) and never read the new PDFs.
    job.settings.force_rerun = True
    return job


def _place(node: Command | SweepNode, step: str, instance_type: str, image: Environment | None) -> None:
    """Per-step runtime: instance type (an InstanceType CRD on the AKS cluster) and the image override.
    A sweep node's trials run its `trial` component, which takes the image."""
    from azure.ai.ml.entities import Sweep as SweepNode

    node.display_name = step  # child jobs carry it: job_status finds each step by it
    node.set_resources(instance_type=instance_type)
    if image is not None:
        (node.trial if isinstance(node, SweepNode) else node).environment = image


def progress_state(step_statuses: Mapping[str, str]) -> JobState:
    """While the pipeline runs: the furthest step AML has created a job for (Submitted before the first)."""
    started = [step for step in STEPS if step in step_statuses]
    return STEP_STATES[started[-1]] if started else JobState.SUBMITTED


def failed_step(step_statuses: Mapping[str, str]) -> str | None:
    """The first step (in pipeline order) that ended without completing."""
    return next((step for step in STEPS if step_statuses.get(step) in FAILED_STATUSES), None)
