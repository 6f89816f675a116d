"""The UI's settings: read from the environment, bad values named, and every one documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from ui.settings import SettingsError, UiSettings, env_names

README = Path(__file__).resolve().parents[1] / "ui" / "README.md"


def test_defaults_point_at_the_local_stack() -> None:
    settings = UiSettings.from_env({})
    assert settings.api_base_url == "http://127.0.0.1:7071"
    assert settings.data_container == "gpt2-training-data"
    assert settings.max_upload_bytes == 50 * 1024 * 1024


def test_values_are_read_and_urls_lose_a_trailing_slash() -> None:
    settings = UiSettings.from_env(
        {
            "API_BASE_URL": "https://fn.example.net/",
            "UI_MAX_UPLOAD_MB": "0.5",
            "DataStorage__blobServiceUri": "https://acct.blob.core.windows.net/",
            "SCORING_URL": "",
            "FUNCTION_KEY": " k ",
        }
    )
    assert settings.api_base_url == "https://fn.example.net"
    assert settings.storage_account_url == "https://acct.blob.core.windows.net"
    assert settings.max_upload_bytes == 512 * 1024
    assert settings.scoring_url == "" and settings.function_key == "k"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "UI_STATUS_REFRESH_S='abc' is not a number; set it to e.g. 5.0"),
        ("0", "UI_STATUS_REFRESH_S='0' must be greater than 0"),
    ],
)
def test_bad_numbers_are_named(value: str, message: str) -> None:
    with pytest.raises(SettingsError) as err:
        UiSettings.from_env({"UI_STATUS_REFRESH_S": value})
    assert str(err.value) == message


def test_every_setting_is_documented_in_the_ui_readme() -> None:
    readme = README.read_text()
    assert [name for name in env_names() if f"`{name}`" not in readme] == []
