"""Ask the scoring endpoint (aks_jobs/score.py behind azmlinfsrv or an AML online endpoint) to complete a prompt.

Every failure becomes a ScoringError with a message for the person chatting, never a traceback.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import httpx

from ui.api_client import error_detail


class ScoringError(Exception):
    """No completion: the endpoint is not deployed, unreachable, refused the request or failed."""


@dataclass(frozen=True)
class GenerationSettings:
    """The knobs the chat's side panel sets; defaults are the scoring script's own."""

    max_new_tokens: int = 50
    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    do_sample: bool = True


@dataclass(frozen=True)
class Answer:
    text: str  # the continuation only; the scoring script does not repeat the prompt
    model_name: str
    model_version: str
    parameters: dict[str, Any]  # what the server actually used (seed included), to reproduce the answer


def complete(scoring_url: str | None, prompt: str, settings: GenerationSettings, *,
             key: str = "", timeout_s: float = 120.0) -> Answer:
    if not scoring_url:
        raise ScoringError("No model is deployed yet. Upload PDFs on the Knowledge Base page; the chat works "
                           "once the status says New model deployed.")
    if not prompt.strip():
        raise ScoringError("Type the beginning of a sentence for the model to complete.")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.post(scoring_url, json={"prompt": prompt, **asdict(settings)}, headers=headers,
                              timeout=timeout_s)
    except httpx.TimeoutException:
        raise ScoringError(f"The model did not answer within {timeout_s:g} s. Try fewer new tokens, or try "
                           f"again when the endpoint is less busy.") from None
    except httpx.HTTPError:
        raise ScoringError(f"The scoring endpoint at {scoring_url} is not answering (connection refused or "
                           f"host not found). It may be starting or down; try again in a minute.") from None
    if response.status_code == 400:
        raise ScoringError(f"The model refused the request: {error_detail(response)}")
    if response.status_code in (401, 403):
        raise ScoringError(f"The scoring endpoint refused access (HTTP {response.status_code}): set AML_SUBSCRIPTION_ID, "
                           f"AML_RESOURCE_GROUP, AML_WORKSPACE and AML_ENDPOINT_NAME so the UI fetches tokens "
                           f"with its identity, or SCORING_KEY to a current key or token.")
    if response.status_code == 404:
        raise ScoringError(f"Nothing is deployed at {scoring_url} (HTTP 404). The deployment may be in "
                           f"progress; check the Knowledge Base status.")
    if response.status_code == 503:
        raise ScoringError(f"The endpoint is not serving a model right now (HTTP 503: {error_detail(response)}). "
                           f"A deployment may be starting; try again in a minute.")
    if response.status_code >= 400:
        raise ScoringError(f"The scoring endpoint failed (HTTP {response.status_code}): {error_detail(response)}")
    return _answer(response)


def _answer(response: httpx.Response) -> Answer:
    try:
        body = response.json()
        text = body["generations"][0][0]
        model = body.get("model") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise ScoringError("The scoring endpoint answered without a generation; is SCORING_URL pointing at "
                           "the model's /score?") from None
    return Answer(text=str(text), model_name=str(model.get("name", "unknown")),
                  model_version=str(model.get("version", "unknown")),
                  parameters=body.get("parameters") or {})
