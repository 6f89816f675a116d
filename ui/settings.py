"""Everything the UI reads from its environment, in one place.

The storage setting names are the control plane's own (DataStorage, DATA_CONTAINER), so one set of
app settings configures both; the UI does not import function_app because it ships on its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import AliasGenerator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict


class SettingsError(ValueError):
    """An app setting has a value the UI cannot use; the message names it and says what to set."""


class UiSettings(BaseSettings):
    """Read by `from_env` from the environment through pydantic-settings (names: each field's alias, else its name
    in capitals; blank values are unset). Constructing it directly reads no environment."""

    model_config = SettingsConfigDict(
        frozen=True,
        case_sensitive=True,
        env_ignore_empty=True,
        extra="ignore",
        validate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=str.upper),
    )

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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        **_: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> UiSettings:
        env = os.environ if env is None else env
        values = _Environment(cls, {name: value.strip() for name, value in env.items()})()
        try:
            return cls(**values)
        except ValidationError as err:
            raise SettingsError(_explain(cls, err.errors()[0])) from None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str]:
        return {name: value for name, value in self._env.items() if value}


def _explain(cls: type[BaseSettings], error: dict[str, Any]) -> str:
    """One validation error as a sentence naming the setting, its value and what to set."""
    name, raw = str(error["loc"][0]), error.get("input")
    if error["type"] == "float_parsing":
        default = next(f.default for f in cls.model_fields.values() if f.validation_alias == name)
        return f"{name}={raw!r} is not a number; set it to e.g. {default}"
    if error["type"] == "greater_than":
        return f"{name}={raw!r} must be greater than {error['ctx']['gt']:g}"
    return f"{name}={raw!r}: {error['msg']}"


def env_names() -> list[str]:
    """Every environment variable the UI reads (for the README and its test)."""
    return [field.validation_alias for field in UiSettings.model_fields.values()]
