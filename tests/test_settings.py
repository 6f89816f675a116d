"""Settings from the environment through pydantic-settings: every type converted, bounds checked, and a bad
value refused with a message naming the setting and what to set."""

from __future__ import annotations

import pytest
from pydantic import Field

from function_app.settings import EnvSettings, Settings, SettingsError, StorageConnection


class Example(EnvSettings):
    """Kinds of setting the control plane's own do not all have yet."""

    ratio: float = Field(0.5, gt=0, le=1)
    enabled: bool = False
    port: int = Field(5100, ge=1, le=65535, description="a TCP port")


def test_floats_and_bools_are_converted_not_left_as_strings() -> None:
    example = Example.from_env({"RATIO": "0.25", "ENABLED": "true"})
    assert (example.ratio, example.enabled) == (0.25, True)
    assert Example.from_env({"ENABLED": "0"}).enabled is False
    settings = Settings.from_env({"TRAIN_EPOCHS": "2.5", "DEBOUNCE_SECONDS": "5", "LOCAL_ROUTER_PORT": "5200"})
    assert (settings.train_epochs, settings.debounce_seconds, settings.local_router_port) == (2.5, 5, 5200)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RATIO": "half"}, "RATIO='half' is not a number; set it to e.g. 0.5"),
        ({"RATIO": "1.5"}, "RATIO='1.5' must be at most 1"),
        ({"ENABLED": "maybe"}, "ENABLED='maybe' is not true or false; set it to e.g. False"),
        ({"PORT": "85o1"}, "PORT='85o1' is not a TCP port; set it to e.g. 5100"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting_and_what_to_set(env: dict, message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Example.from_env(env)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBOUNCE_SECONDS": "1m"}, "DEBOUNCE_SECONDS='1m' is not a whole number; set it to e.g. 60"),
        ({"DOCUMENT_MAX_ATTEMPTS": "0"}, "DOCUMENT_MAX_ATTEMPTS='0' must be at least 1"),
        ({"TRAIN_EPOCHS": "-3"}, "TRAIN_EPOCHS='-3' must be greater than 0"),
    ],
)
def test_control_plane_settings_are_checked_by_name(env: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_empty_means_unset_and_direct_construction_reads_no_environment(monkeypatch) -> None:
    assert Settings.from_env({"TRAIN_EPOCHS": "", "DEBOUNCE_SECONDS": ""}) == Settings()
    monkeypatch.setenv("DEBOUNCE_SECONDS", "7")
    assert Settings().debounce_seconds == 60 and Settings.from_env().debounce_seconds == 7


def test_surrounding_spaces_are_ignored_in_the_control_planes_and_the_uis_settings() -> None:
    # One loader (pipeline_contracts/env_settings.py) for both: a pasted " 5 " is 5 and "  " is unset.
    from ui.settings import UiSettings

    assert Settings.from_env({"DEBOUNCE_SECONDS": " 5 ", "DATA_CONTAINER": "  "}).debounce_seconds == 5
    assert Settings.from_env({"DATA_CONTAINER": "  "}).data_container == Settings().data_container
    assert UiSettings.from_env({"UI_STATUS_REFRESH_S": " 2.5\n"}).status_refresh_s == 2.5


def test_storage_needs_a_connection_string_or_both_service_uris() -> None:
    assert StorageConnection.from_env({"DataStorage": "UseDevelopmentStorage=true"}).connection_string
    with pytest.raises(SettingsError, match="set DataStorage to a connection string") as refused:
        StorageConnection.from_env({"DataStorage__blobServiceUri": "https://x.blob.core.windows.net"})
    assert "DataStorage__tableServiceUri" in str(refused.value)
