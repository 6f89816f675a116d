"""aml_token scoring tokens for the chat, fetched with the UI's managed identity and cached until due.

The online endpoint uses auth_mode aml_token: tokens, not keys, and they expire. azure-ai-ml's
`MLClient.online_endpoints.get_keys(name)` returns them as an EndpointAuthToken (access_token,
expiry_time_utc, refresh_after_time_utc) from one ARM call, POST .../onlineEndpoints/<name>/token
(Azure/azure-sdk-for-python sdk/ml/azure-ai-ml: operations/_online_endpoint_operations.py
_get_online_credentials, _restclient/arm_ml_service build_online_endpoints_get_token_request). The UI
makes that same call with httpx and DefaultAzureCredential, so it does not need azure-ai-ml.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ui.scoring_client import ScoringError

ARM_SCOPE = "https://management.azure.com/.default"
ARM_URL = "https://management.azure.com"
# The api-version azure-ai-ml 1.35 sends for this operation.
TOKEN_API_VERSION = "2025-12-01"
# Fetch a new token this long before the current one expires, whatever refreshAfterTimeUtc says.
EXPIRY_MARGIN_S = 120.0


@dataclass(frozen=True)
class EndpointRef:
    subscription_id: str
    resource_group: str
    workspace: str
    endpoint: str

    def token_url(self, arm_url: str = ARM_URL) -> str:
        return (
            f"{arm_url}/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/"
            f"Microsoft.MachineLearningServices/workspaces/{self.workspace}/onlineEndpoints/{self.endpoint}/token"
        )


class EndpointTokens:
    """One endpoint's current scoring token; thread-safe (Streamlit serves each session on its own thread)."""

    def __init__(
        self,
        endpoint: EndpointRef,
        *,
        credential: Any = None,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        arm_url: str = ARM_URL,
        timeout_s: float = 10.0,
    ) -> None:
        if credential is None:
            from azure.identity import DefaultAzureCredential  # the managed identity in Azure

            credential = DefaultAzureCredential()
        self._endpoint = endpoint
        self._credential = credential
        self._client = client or httpx.Client(timeout=timeout_s)
        self._clock = clock
        self._url = endpoint.token_url(arm_url)
        self._lock = threading.Lock()
        self._token = ""
        self._renew_at = 0.0

    def token(self) -> str:
        with self._lock:
            if not self._token or self._clock() >= self._renew_at:
                self._token, self._renew_at = self._fetch()
            return self._token

    def _fetch(self) -> tuple[str, float]:
        name = self._endpoint.endpoint
        try:
            arm_token = self._credential.get_token(ARM_SCOPE).token
            response = self._client.post(
                self._url, params={"api-version": TOKEN_API_VERSION}, headers={"Authorization": f"Bearer {arm_token}"}
            )
        except httpx.HTTPError as err:
            raise ScoringError(
                f"Cannot reach Azure to get a scoring token for endpoint {name} "
                f"({type(err).__name__}); try again in a minute."
            ) from None
        except Exception as err:  # noqa: BLE001 - azure-identity: no managed identity / not signed in
            raise ScoringError(
                f"The UI has no Azure identity to get a scoring token for endpoint {name}: "
                f"{str(err)[:300]}. In Azure it uses its managed identity; locally run "
                f"`az login` or set SCORING_KEY."
            ) from None
        if response.status_code in (401, 403):
            raise ScoringError(
                f"The UI's identity may not get scoring tokens for endpoint {name} (HTTP "
                f"{response.status_code}): it needs the role that allows onlineEndpoints/token/action "
                f"(infra/modules/roles.bicep)."
            )
        if response.status_code == 404:
            raise ScoringError(
                f"Endpoint {name} does not exist in workspace {self._endpoint.workspace} yet; the "
                f"chat works once the first model is deployed."
            )
        if response.status_code >= 400:
            raise ScoringError(f"Azure refused a scoring token for endpoint {name} (HTTP {response.status_code}).")
        try:
            body = response.json()
            token, expiry = str(body["accessToken"]), float(body["expiryTimeUtc"])
            refresh_after = float(body.get("refreshAfterTimeUtc") or expiry)
        except (ValueError, KeyError, TypeError):
            raise ScoringError(
                f"Azure answered the scoring-token request for endpoint {name} without a token."
            ) from None
        return token, min(refresh_after, expiry - EXPIRY_MARGIN_S)
