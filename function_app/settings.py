"""Every app setting the control plane reads, in one place.

Names are the app-setting (environment variable) names used by local.settings.sample.json and the
Bicep app settings; tests check the three agree. Read once per invocation via `Settings.from_env()`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

# Storage connection used by our own clients (blob and table). Locally a connection string
# (Azurite); in Azure identity-based: DataStorage__blobServiceUri / __queueServiceUri /
# __tableServiceUri with the Function's managed identity.
STORAGE_CONNECTION = "DataStorage"


@dataclass(frozen=True)
class Settings:
    data_container: str = "gpt2-training-data"
    status_table: str = "pipelinestatus"
    timer_schedule: str = "0 */1 * * * *"
    debounce_seconds: int = 60
    pipeline_backend: str = "local"  # local | aml
    base_model: str = "gpt2"
    train_preset: str = "default"
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
    local_router_port: int = 5100
    # Key that POST /api/retrain wants (x-functions-key) when the API runs under uvicorn instead of
    # the Functions host; empty = accept only requests from this machine (loopback).
    local_api_key: str = ""
    # MLflow for the local backend's steps and deployments; empty = the steps' documented default
    # (sqlite under <repo>/.local/mlflow). AML jobs get theirs from AML.
    mlflow_tracking_uri: str = ""
    # Optional override of the train component's epochs (empty = the preset's own), e.g. for quick local runs.
    train_epochs: str = ""
    # Run orchestration: give up on a step after this many transient errors, or a deployment that
    # stays Creating this long.
    max_transient_retries: int = 6
    deploy_timeout_seconds: int = 1800
    # A Pending run is submitted this long after it was created even while uploads keep arriving.
    debounce_max_wait_seconds: int = 900
    # Deadlines per state: a job still queued (Submitted) or in one step past these is cancelled and its
    # run fails with the reason (deploy_timeout_seconds covers Deploying and SmokeTest).
    queued_timeout_seconds: int = 3600
    preprocess_timeout_seconds: int = 3600
    train_timeout_seconds: int = 43200
    evaluate_timeout_seconds: int = 3600
    # Documents of a run that ended Failed or RolledBack wait this long (doubling per attempt) before the
    # next run retries them; after this many attempts they are shown as failed until a retrain or upload.
    document_retry_seconds: int = 300
    document_max_attempts: int = 3
    # Run history kept in the status table: the newest N (the active and the serving run always stay).
    keep_runs: int = 200
    # Retention: keep the newest N text snapshots in processed/ (plus the serving model's) and delete
    # older ones, so the text of removed documents leaves storage; 0 keeps every snapshot.
    snapshot_retention: int = 5
    # Limits, each reported by name when hit (preprocess.py / train.py options of the same names): text kept
    # per document (longer is cut), per snapshot (documents past it are left out), characters of text per
    # byte of PDF (more is a decompression bomb: no text); training steps and seconds (0 = no limit).
    preprocess_max_document_chars: int = 10_000_000
    preprocess_max_corpus_chars: int = 200_000_000
    preprocess_max_chars_per_byte: int = 100
    train_max_steps: int = 0
    train_max_wall_s: int = 0

    def preprocess_limits(self) -> dict[str, int]:
        """The preprocess component's limit inputs."""
        return {"max_document_chars": self.preprocess_max_document_chars,
                "max_corpus_chars": self.preprocess_max_corpus_chars,
                "max_chars_per_byte": self.preprocess_max_chars_per_byte}

    def train_limits(self) -> dict[str, int]:
        """The train component's limit inputs that are set (0 = unset: no limit)."""
        return {name: value for name, value in (("max_steps", self.train_max_steps),
                                                ("max_wall_s", self.train_max_wall_s)) if value}

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get(setting_name(f.name))
            if raw not in (None, ""):
                values[f.name] = int(raw) if f.type == "int" else raw
        return cls(**values)


@dataclass(frozen=True)
class StorageConnection:
    """The DataStorage connection: a connection string (Azurite) or identity-based service URIs."""

    connection_string: str = ""
    blob_service_uri: str = ""
    table_service_uri: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "StorageConnection":
        env = os.environ if env is None else env
        found = cls(
            connection_string=env.get(STORAGE_CONNECTION, ""),
            blob_service_uri=env.get(f"{STORAGE_CONNECTION}__blobServiceUri", ""),
            table_service_uri=env.get(f"{STORAGE_CONNECTION}__tableServiceUri", ""),
        )
        if not found.connection_string and not (found.blob_service_uri and found.table_service_uri):
            raise ValueError(
                f"Storage is not configured: set {STORAGE_CONNECTION} to a connection string (locally "
                f"Azurite's, see local.settings.sample.json) or both {STORAGE_CONNECTION}__blobServiceUri and "
                f"{STORAGE_CONNECTION}__tableServiceUri (identity-based, Azure)."
            )
        return found


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
    return [STORAGE_CONNECTION] + [setting_name(f.name) for f in fields(Settings)]
