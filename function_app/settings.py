"""Every app setting the control plane reads, in one place.

Names are the app-setting (environment variable) names used by local.settings.sample.json and the
Bicep app settings; tests check the three agree. Read once per invocation via `Settings.from_env()`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

# Storage connection used by the blob trigger and by our own clients. Locally a connection string
# (Azurite); in Azure identity-based: DataStorage__blobServiceUri / __queueServiceUri /
# __tableServiceUri with the Function's managed identity.
STORAGE_CONNECTION = "DataStorage"


@dataclass(frozen=True)
class Settings:
    data_container: str = "gpt2-training-data"
    status_table: str = "pipelinestatus"
    # EventGrid in Azure; LogsAndContainerScan (polling) with Azurite, which has no Event Grid.
    blob_trigger_source: str = "LogsAndContainerScan"
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
    local_scoring_ports: str = "5001,5002"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get(setting_name(f.name))
            if raw not in (None, ""):
                values[f.name] = int(raw) if f.type == "int" else raw
        return cls(**values)


def setting_name(field_name: str) -> str:
    """App-setting name of a Settings field: DEBOUNCE_SECONDS for debounce_seconds."""
    return field_name.upper()


def setting_names() -> list[str]:
    """Every app setting the code reads, for the consistency tests and infra."""
    return [STORAGE_CONNECTION] + [setting_name(f.name) for f in fields(Settings)]
