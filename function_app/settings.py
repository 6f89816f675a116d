"""Every app setting the control plane reads, in one place (the loader: pipeline_contracts/env_settings.py).

Names are the app-setting (environment variable) names used by local.settings.sample.json and the
Bicep app settings; tests check the three agree. Read once per invocation via `Settings.from_env()`.
pydantic-settings converts and checks each value (types and bounds below); a bad one raises SettingsError
naming the setting and what to set instead.
"""

from __future__ import annotations

import os
from typing import Self

from pydantic import Field, model_validator

from aks_jobs.lm.sweep import PRESETS_EVALUATING_EVERY_EPOCH, BanditRule, SearchSpace, Sweep, SweepLimits
from pipeline_contracts.api_requests import MAX_EPOCHS, MAX_LEARNING_RATE, MAX_SWEEP_TRIALS, Preset

# Re-exported: the control plane imports its settings, their base and their error from here.
from pipeline_contracts.env_settings import EnvSettings as EnvSettings
from pipeline_contracts.env_settings import SettingsError as SettingsError

# Storage connection used by our own clients (blob and table). Locally a connection string
# (Azurite); in Azure identity-based: DataStorage__blobServiceUri / __queueServiceUri /
# __tableServiceUri with the Function's managed identity.
STORAGE_CONNECTION = "DataStorage"


class Settings(EnvSettings):
    data_container: str = "gpt2-training-data"
    status_table: str = "pipelinestatus"
    timer_schedule: str = "0 */1 * * * *"
    debounce_seconds: int = Field(60, ge=0)
    pipeline_backend: str = "local"  # local | aml
    base_model: str = "gpt2"
    train_preset: Preset = "default"
    model_name: str = "gpt2-pdf"
    smoke_prompt: str = "The documents say that"
    # aml backend
    aml_subscription_id: str = ""
    aml_resource_group: str = ""
    aml_workspace: str = ""
    aml_compute: str = "aks-compute-target"
    aml_cpu_instance_type: str = "cpu-small"
    aml_gpu_instance_type: str = "gpu-t4"
    aml_environment_image: str = ""
    aml_datastore: str = "gpt2_training_data"
    aml_endpoint_name: str = "gpt2-pdf"
    # local backend
    local_work_dir: str = ".local/work"
    # One port per deployment; a rollout holds three: serving, its rollback target and the candidate.
    local_scoring_ports: str = "5001,5002,5003"
    # Fixed port of the local router: the stable scoring URL, forwarding to the deployment with traffic.
    local_router_port: int = Field(5100, ge=1, le=65535, description="a TCP port")
    # Key that POST /api/retrain wants (x-functions-key) when the API runs under uvicorn instead of
    # the Functions host; empty = accept only requests from this machine (loopback).
    local_api_key: str = ""
    # MLflow for the local backend's steps and deployments; empty = the steps' documented default
    # (sqlite under <repo>/.local/mlflow). AML jobs get theirs from AML.
    mlflow_tracking_uri: str = ""
    # Optional override of the train component's epochs (empty = the preset's own), e.g. for quick local runs.
    train_epochs: float | None = Field(None, gt=0, le=MAX_EPOCHS, examples=[3])
    # Likewise the learning rate (empty = the preset's own); POST /api/retrain may set both per run.
    train_learning_rate: float | None = Field(None, gt=0, le=MAX_LEARNING_RATE, examples=[5e-5])
    # Run orchestration: give up on a step after this many transient errors, or a deployment that
    # stays Creating this long.
    max_transient_retries: int = Field(6, ge=0)
    deploy_timeout_seconds: int = Field(1800, ge=1)
    # A Pending run is submitted this long after it was created even while uploads keep arriving.
    debounce_max_wait_seconds: int = Field(900, ge=0)
    # Deadlines per state: a job still queued (Submitted) or in one step past these is cancelled and its
    # run fails with the reason (deploy_timeout_seconds covers Deploying and SmokeTest).
    queued_timeout_seconds: int = Field(3600, ge=1)
    preprocess_timeout_seconds: int = Field(3600, ge=1)
    train_timeout_seconds: int = Field(43200, ge=1)
    evaluate_timeout_seconds: int = Field(3600, ge=1)
    # Documents of a run that ended Failed or RolledBack wait this long (doubling per attempt) before the
    # next run retries them; after this many attempts they are shown as failed until a retrain or upload.
    document_retry_seconds: int = Field(300, ge=0)
    document_max_attempts: int = Field(3, ge=1)
    # Run history kept in the status table: the newest N (the active and the serving run always stay).
    keep_runs: int = Field(200, ge=1)
    # Retention: keep the newest N text snapshots in processed/ (plus the serving model's) and delete
    # older ones, so the text of removed documents leaves storage; 0 keeps every snapshot.
    snapshot_retention: int = Field(5, ge=0)
    # Limits, each reported by name when hit (preprocess.py / train.py options of the same names): text kept
    # per document (longer is cut), per snapshot (documents past it are left out), characters of text per
    # byte of PDF (more is a decompression bomb: no text); training steps and seconds (0 = no limit).
    preprocess_max_document_chars: int = Field(10_000_000, ge=1)
    preprocess_max_corpus_chars: int = Field(200_000_000, ge=1)
    preprocess_max_chars_per_byte: int = Field(100, ge=1)
    train_max_steps: int = Field(0, ge=0)
    train_max_wall_s: int = Field(0, ge=0)
    # Hyperparameter sweep of the train step (aks_jobs/lm/sweep.py): 0 = off, one training run. In AML a
    # sweep node runs up to SWEEP_MAX_CONCURRENT_TRIALS trials at once within SWEEP_TIMEOUT_S (0 = the
    # train step's deadline); locally they run one after another. SWEEP_SPACE / SWEEP_RULE are JSON objects
    # overriding the search space's bounds and the Bandit rule (empty = sweep.py's defaults).
    sweep_trials: int = Field(0, ge=0, le=MAX_SWEEP_TRIALS)
    sweep_max_concurrent_trials: int = Field(2, ge=1)
    sweep_timeout_s: int = Field(0, ge=0)
    sweep_space: SearchSpace | None = Field(None, examples=['{"learning_rate_max": 0.001}'])
    sweep_rule: BanditRule | None = Field(None, examples=['{"slack_factor": 0.2, "delay_evaluation": 1}'])
    # Incoming webhook (Teams, Slack) POSTed a JSON message when a run ends or the traffic is rolled back
    # (empty = none). A failing or slow webhook is logged; it never holds a run up longer than the timeout.
    run_webhook_url: str = ""
    run_webhook_timeout_s: float = Field(5, gt=0, le=60)

    def preprocess_limits(self) -> dict[str, int]:
        """The preprocess component's limit inputs."""
        return {
            "max_document_chars": self.preprocess_max_document_chars,
            "max_corpus_chars": self.preprocess_max_corpus_chars,
            "max_chars_per_byte": self.preprocess_max_chars_per_byte,
        }

    def train_limits(self) -> dict[str, int]:
        """The train component's limit inputs that are set (0 = unset: no limit)."""
        return {
            name: value
            for name, value in (("max_steps", self.train_max_steps), ("max_wall_s", self.train_max_wall_s))
            if value
        }

    def sweep(self) -> Sweep | None:
        """The sweep the train step runs, or None when SWEEP_TRIALS is 0."""
        if not self.sweep_trials:
            return None
        return Sweep(
            space=self.sweep_space or SearchSpace(),
            rule=self.sweep_rule or BanditRule(),
            limits=SweepLimits(
                max_total_trials=self.sweep_trials,
                max_concurrent_trials=self.sweep_max_concurrent_trials,
                timeout_s=self.sweep_timeout_s or self.train_timeout_seconds,
            ),
        )

    @model_validator(mode="after")
    def _sweep_needs_per_epoch_evaluation(self) -> Self:
        if self.sweep_trials and self.train_preset not in PRESETS_EVALUATING_EVERY_EPOCH:
            raise ValueError(
                f"SWEEP_TRIALS={self.sweep_trials} needs a preset that evaluates every epoch "
                f"(TRAIN_PRESET=default), not TRAIN_PRESET={self.train_preset}; or set SWEEP_TRIALS=0"
            )
        return self


class StorageConnection(EnvSettings):
    """The DataStorage connection: a connection string (Azurite) or identity-based service URIs."""

    connection_string: str = Field("", validation_alias=STORAGE_CONNECTION)
    blob_service_uri: str = Field("", validation_alias=f"{STORAGE_CONNECTION}__blobServiceUri")
    table_service_uri: str = Field("", validation_alias=f"{STORAGE_CONNECTION}__tableServiceUri")

    @model_validator(mode="after")
    def _configured(self) -> StorageConnection:
        if not self.connection_string and not (self.blob_service_uri and self.table_service_uri):
            raise ValueError(
                f"Storage is not configured: set {STORAGE_CONNECTION} to a connection string (locally "
                f"Azurite's, see local.settings.sample.json) or both {STORAGE_CONNECTION}__blobServiceUri and "
                f"{STORAGE_CONNECTION}__tableServiceUri (identity-based, Azure)."
            )
        return self


def child_env(extra: dict[str, str], path_first: str = "", env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process (a local step or server): this process's, plus `extra`,
    with `path_first` (a folder) ahead of PATH when given."""
    merged = {**(os.environ if env is None else env), **extra}
    if path_first:
        merged["PATH"] = os.pathsep.join(p for p in (path_first, merged.get("PATH", "")) if p)
    return merged


def setting_name(field_name: str) -> str:
    """App-setting name of a Settings field: DEBOUNCE_SECONDS for debounce_seconds."""
    return field_name.upper()


def setting_names() -> list[str]:
    """Every app setting the code reads, for the consistency tests and infra."""
    return [STORAGE_CONNECTION] + Settings.env_names()
