"""Everything the UI reads from its environment, in one place.

The storage setting names are the control plane's own (DataStorage, DATA_CONTAINER), so one set of
app settings configures both; the UI does not import function_app because it ships on its own.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from pipeline_contracts.env_settings import EnvSettings, SettingsError

__all__ = ["SettingsError", "UiSettings", "env_names"]


class UiSettings(EnvSettings):
    """Read by `from_env` from the environment (names: each field's alias, else its name in capitals; blank values
    are unset). Constructing it directly reads no environment."""

    api_base_url: str = "http://127.0.0.1:7071"
    # Sent as x-functions-key on every API call: the Function app's key in Azure (auth level FUNCTION);
    # under uvicorn, LOCAL_API_KEY's value (retrain only; unset there = only this machine may retrain).
    function_key: str = ""
    # Connection string (Azurite, or a key-based account) ...
    storage_connection: str = Field("", validation_alias="DataStorage")
    # ... or the account's blob URL, reached with DefaultAzureCredential (managed identity in Azure).
    # DataStorage__blobServiceUri is how identity-based Functions connections name it, so the Function
    # app's settings can be copied as they are.
    storage_account_url: str = Field("", validation_alias="DataStorage__blobServiceUri")
    data_container: str = "gpt2-training-data"
    max_upload_mb: float = Field(50.0, gt=0, validation_alias="UI_MAX_UPLOAD_MB")
    status_refresh_s: float = Field(5.0, gt=0, validation_alias="UI_STATUS_REFRESH_S")
    api_timeout_s: float = Field(10.0, gt=0, validation_alias="UI_API_TIMEOUT_S")
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
    scoring_timeout_s: float = Field(120.0, gt=0, validation_alias="UI_SCORING_TIMEOUT_S")
    example_prompt: str = Field("Declaration: Zorblat Quenwick is", validation_alias="UI_EXAMPLE_PROMPT")

    @field_validator("api_base_url", "storage_account_url", "scoring_url")
    @classmethod
    def _no_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def env_names() -> list[str]:
    """Every environment variable the UI reads (for the README and its test)."""
    return UiSettings.env_names()
