"""What both pages need from Streamlit: the settings, the API client, and a settings error shown once."""

from __future__ import annotations

import streamlit as st

from ui.api_client import ControlPlaneClient
from ui.markdown_text import literal
from ui.scoring_token import EndpointRef, EndpointTokens
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


@st.cache_resource
def _endpoint_tokens(endpoint: EndpointRef) -> EndpointTokens:
    """One token cache per endpoint for every session of this server process."""
    return EndpointTokens(endpoint)


def scoring_key(config: UiSettings) -> str:
    """SCORING_KEY if set; else a current aml_token for the AML endpoint, if one is configured; else none."""
    if config.scoring_key:
        return config.scoring_key
    endpoint = EndpointRef(
        config.aml_subscription_id, config.aml_resource_group, config.aml_workspace, config.aml_endpoint_name
    )
    if not all((endpoint.subscription_id, endpoint.resource_group, endpoint.workspace, endpoint.endpoint)):
        return ""
    return _endpoint_tokens(endpoint).token()
