"""The UI's aml_token scoring tokens: fetched with its Azure identity, cached until due, errors readable.

Azure is unreachable here, so the one fake is at the Azure boundary: a credential that records the scopes
asked for and an httpx transport that records every request to ARM and answers as the service would.
The request is compared with the one azure-ai-ml itself builds for MLClient.online_endpoints.get_keys
on an aml_token endpoint (Azure/azure-sdk-for-python sdk/ml/azure-ai-ml, operations/
_online_endpoint_operations.py _get_online_credentials -> _restclient/arm_ml_service
build_online_endpoints_get_token_request).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest
from azure.ai.ml._restclient.arm_ml_service.operations._operations import build_online_endpoints_get_token_request

from ui import page_setup
from ui.scoring_client import ScoringError
from ui.scoring_token import ARM_URL, EXPIRY_MARGIN_S, EndpointRef, EndpointTokens
from ui.settings import UiSettings

ENDPOINT = EndpointRef("00000000-0000-0000-0000-000000000000", "rg-gpt2", "ws-gpt2", "gpt2-pdf")
NOW = 1_800_000_000.0


class RecordingAzure:
    """Entra ID and ARM as seen from the UI: records what is asked, answers from `answers`."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []
        self.requests: list[httpx.Request] = []
        self.answers: list[httpx.Response] = []
        self.issued = 0

    def get_token(self, *scopes: str, **_):
        self.scopes.append(scopes)
        return SimpleNamespace(token="arm-token-for-the-ui-identity", expires_on=int(NOW) + 3600)

    def token_answer(self, expiry: float, refresh_after: float | None = None) -> None:
        self.issued += 1
        body = {"accessToken": f"aml-token-{self.issued}", "expiryTimeUtc": int(expiry), "tokenType": "Bearer"}
        if refresh_after is not None:
            body["refreshAfterTimeUtc"] = int(refresh_after)
        self.answers.append(httpx.Response(200, json=body))

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            return httpx.Response(500, json={"error": {"message": "fake ARM: no answer scripted"}})
        return self.answers.pop(0)


@pytest.fixture
def azure():
    return RecordingAzure()


@pytest.fixture
def clock():
    return SimpleNamespace(now=NOW)


@pytest.fixture
def tokens(azure, clock):
    client = httpx.Client(transport=httpx.MockTransport(azure.handle))
    return EndpointTokens(ENDPOINT, credential=azure, client=client, clock=lambda: clock.now)


def test_the_request_is_the_one_azure_ai_ml_sends_for_get_keys(azure, tokens):
    azure.token_answer(expiry=NOW + 3600)
    assert tokens.token() == "aml-token-1"
    assert azure.scopes == [("https://management.azure.com/.default",)]
    (sent,) = azure.requests
    sdk = build_online_endpoints_get_token_request(
        resource_group_name="rg-gpt2",
        workspace_name="ws-gpt2",
        endpoint_name="gpt2-pdf",
        subscription_id="00000000-0000-0000-0000-000000000000",
    )
    assert sent.method == sdk.method == "POST"
    assert str(sent.url) == ARM_URL + sdk.url  # path and api-version
    assert sent.headers["Authorization"] == "Bearer arm-token-for-the-ui-identity"


def test_a_token_is_reused_until_its_refresh_time_then_renewed(azure, clock, tokens):
    azure.token_answer(expiry=NOW + 3600, refresh_after=NOW + 1800)
    azure.token_answer(expiry=NOW + 7200, refresh_after=NOW + 5400)
    assert tokens.token() == "aml-token-1"
    clock.now = NOW + 1799
    assert tokens.token() == "aml-token-1" and len(azure.requests) == 1
    clock.now = NOW + 1800
    assert tokens.token() == "aml-token-2" and len(azure.requests) == 2
    clock.now = NOW + 5000
    assert tokens.token() == "aml-token-2" and len(azure.requests) == 2


def test_without_a_refresh_time_the_token_is_renewed_before_it_expires(azure, clock, tokens):
    azure.token_answer(expiry=NOW + 600)
    azure.token_answer(expiry=NOW + 1200)
    tokens.token()
    clock.now = NOW + 600 - EXPIRY_MARGIN_S - 1
    assert tokens.token() == "aml-token-1"
    clock.now = NOW + 600 - EXPIRY_MARGIN_S
    assert tokens.token() == "aml-token-2"


@pytest.mark.parametrize(
    "status, says", [(403, "onlineEndpoints/token/action"), (404, "does not exist"), (500, "HTTP 500")]
)
def test_refusals_become_messages_for_the_person_chatting(azure, tokens, status, says):
    azure.answers.append(httpx.Response(status, json={"error": {"code": "x", "message": "y"}}))
    with pytest.raises(ScoringError, match=says):
        tokens.token()


def test_an_answer_without_a_token_is_an_error_not_an_empty_bearer(azure, tokens):
    azure.answers.append(httpx.Response(200, content=json.dumps({"tokenType": "Bearer"})))
    with pytest.raises(ScoringError, match="without a token"):
        tokens.token()


def test_a_missing_identity_says_what_to_do(tokens, azure):
    def no_identity(*_scopes, **_):
        raise RuntimeError("DefaultAzureCredential failed to retrieve a token")

    azure.get_token = no_identity
    with pytest.raises(ScoringError, match="az login"):
        tokens.token()


def test_the_chat_uses_a_fixed_key_if_given_and_nothing_without_an_endpoint():
    assert page_setup.scoring_key(UiSettings(scoring_key="fixed")) == "fixed"
    assert page_setup.scoring_key(UiSettings()) == ""
    assert page_setup.scoring_key(UiSettings(aml_workspace="ws-gpt2", aml_endpoint_name="gpt2-pdf")) == ""


def test_the_chat_gets_the_endpoint_token_when_the_aml_endpoint_is_set(monkeypatch, azure):
    azure.token_answer(expiry=NOW + 3600)
    made = []

    def endpoint_tokens(endpoint):
        made.append(endpoint)
        return EndpointTokens(
            endpoint, credential=azure, client=httpx.Client(transport=httpx.MockTransport(azure.handle))
        )

    monkeypatch.setattr(page_setup, "_endpoint_tokens", endpoint_tokens)
    config = UiSettings.from_env(
        {
            "AML_SUBSCRIPTION_ID": ENDPOINT.subscription_id,
            "AML_RESOURCE_GROUP": "rg-gpt2",
            "AML_WORKSPACE": "ws-gpt2",
            "AML_ENDPOINT_NAME": "gpt2-pdf",
        }
    )
    assert page_setup.scoring_key(config) == "aml-token-1"
    assert made == [ENDPOINT]
