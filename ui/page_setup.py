"""What both pages need from Streamlit: the settings, the API client, and a settings error shown once."""
from __future__ import annotations

import streamlit as st

from ui.api_client import ControlPlaneClient
from ui.markdown_text import literal
from ui.settings import SettingsError, UiSettings


def settings() -> UiSettings:
    """The settings, or stop the page with the reason (a bad number in an environment variable)."""
    try:
        return UiSettings.from_env()
    except SettingsError as err:
        st.error(literal(str(err)))
        st.stop()


def api(config: UiSettings) -> ControlPlaneClient:
    return ControlPlaneClient(config.api_base_url, function_key=config.function_key, timeout_s=config.api_timeout_s)
