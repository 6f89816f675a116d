"""Everything the UI reads from its environment, in one place.

The storage setting names are the control plane's own (DataStorage, DATA_CONTAINER), so one set of
app settings configures both; the UI does not import function_app because it ships on its own.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


class SettingsError(ValueError):
    """An app setting has a value the UI cannot use; the message names it and says what to set."""


@dataclass(frozen=True)
class UiSettings:
    api_base_url: str = "http://127.0.0.1:7071"
    # Sent as x-functions-key on every API call: the Function app's key in Azure (auth level FUNCTION);
    # under uvicorn, LOCAL_API_KEY's value (retrain only; unset there = only this machine may retrain).
    function_key: str = ""
    # Connection string (Azurite, or a key-based account) ...
    storage_connection: str = ""
    # ... or the account's blob URL, reached with DefaultAzureCredential (managed identity in Azure).
    storage_account_url: str = ""
    data_container: str = "gpt2-training-data"
    max_upload_mb: float = 50.0
    status_refresh_s: float = 5.0
    api_timeout_s: float = 10.0
    # Overrides the scoring URL the status API reports (e.g. a gateway in front of the endpoint).
    scoring_url: str = ""
    # Sent as "Authorization: Bearer": a fixed key or token; empty for the local server. In Azure leave it
    # empty and set the four AML_* names: the UI then gets fresh aml_token tokens with its identity.
    scoring_key: str = ""
    # The AML online endpoint whose scoring tokens the UI fetches (the Function app's names and values).
    aml_subscription_id: str = ""
    aml_resource_group: str = ""
    aml_workspace: str = ""
    aml_endpoint_name: str = ""
    # Generation on a CPU pod can take a while; past this the chat says so instead of hanging.
    scoring_timeout_s: float = 120.0
    example_prompt: str = "Declaration: Zorblat Quenwick is"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "UiSettings":
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, field_name, kind in _ENV:
            raw = env.get(name, "").strip()
            if not raw:
                continue
            if kind is float:
                try:
                    number = float(raw)
                except ValueError:
                    raise SettingsError(f"{name}={raw!r} is not a number; set it to e.g. "
                                        f"{getattr(cls, field_name)}") from None
                if number <= 0:
                    raise SettingsError(f"{name}={raw!r} must be greater than 0")
                values[field_name] = number
            else:
                values[field_name] = raw.rstrip("/") if field_name.endswith("_url") else raw
        return cls(**values)


# (environment variable, field, type). DataStorage__blobServiceUri is how identity-based Functions
# connections name the account URL, so the Function app's settings can be copied as they are.
_ENV: tuple[tuple[str, str, type], ...] = (
    ("API_BASE_URL", "api_base_url", str),
    ("FUNCTION_KEY", "function_key", str),
    ("DataStorage", "storage_connection", str),
    ("DataStorage__blobServiceUri", "storage_account_url", str),
    ("DATA_CONTAINER", "data_container", str),
    ("UI_MAX_UPLOAD_MB", "max_upload_mb", float),
    ("UI_STATUS_REFRESH_S", "status_refresh_s", float),
    ("UI_API_TIMEOUT_S", "api_timeout_s", float),
    ("SCORING_URL", "scoring_url", str),
    ("SCORING_KEY", "scoring_key", str),
    ("AML_SUBSCRIPTION_ID", "aml_subscription_id", str),
    ("AML_RESOURCE_GROUP", "aml_resource_group", str),
    ("AML_WORKSPACE", "aml_workspace", str),
    ("AML_ENDPOINT_NAME", "aml_endpoint_name", str),
    ("UI_SCORING_TIMEOUT_S", "scoring_timeout_s", float),
    ("UI_EXAMPLE_PROMPT", "example_prompt", str),
)


def env_names() -> list[str]:
    """Every environment variable the UI reads (for the README and its test)."""
    return [name for name, _, _ in _ENV]
