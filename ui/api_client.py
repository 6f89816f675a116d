"""Client of the control plane's HTTP API (function_app): status, runs, documents (and deleting one), retrain,
cancel, rollback.

Every failure becomes an ApiError whose message a person can act on; callers never see a traceback.
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from pipeline_contracts import api_responses as answers
from pipeline_contracts.api_requests import RollbackRequest, TrainChoices

Answer = TypeVar("Answer", bound=BaseModel)


class ApiError(Exception):
    """The API could not be reached or did not answer as documented."""


class ControlPlaneClient:
    def __init__(self, base_url: str, *, function_key: str = "", timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"x-functions-key": function_key} if function_key else {}
        self._timeout = timeout_s

    # Every answer is read into the API's own response model (pipeline_contracts.api_responses).
    def status(self) -> answers.Status:
        return self._request(answers.Status, "GET", "/api/status")

    def runs(self) -> list[answers.RunSummary]:
        return self._request(answers.RunsPage, "GET", "/api/runs").runs

    def run(self, run_id: str) -> answers.RunDetail:
        return self._request(answers.RunDetail, "GET", f"/api/runs/{run_id}")

    def documents(self) -> list[answers.Document]:
        return self._request(answers.Documents, "GET", "/api/documents").documents

    def retrain_defaults(self) -> answers.RetrainDefaults:
        return self._request(answers.RetrainDefaults, "GET", "/api/retrain")

    def retrain(self, choices: TrainChoices | None = None) -> answers.RetrainQueued:
        """Queue a run; `choices` left unset keep the app settings (the API checks them: 400 names the field)."""
        body = choices.model_dump(exclude_none=True) if choices else {}
        return self._request(answers.RetrainQueued, "POST", "/api/retrain", json=body)

    def rollback(self, requested_by: str) -> answers.RolledBack:
        body = RollbackRequest(requested_by=requested_by).model_dump()
        return self._request(answers.RolledBack, "POST", "/api/rollback", json=body)

    def cancel_run(self) -> answers.RunCancelled:
        return self._request(answers.RunCancelled, "POST", "/api/runs/active/cancel", json={})

    def delete_document(self, name: str) -> answers.DocumentRemoved:
        return self._request(answers.DocumentRemoved, "DELETE", f"/api/documents/{quote(name)}")

    def _request(self, answer: type[Answer], method: str, path: str, **body: Any) -> Answer:
        url = self.base_url + path
        try:
            response = httpx.request(method, url, headers=self._headers, timeout=self._timeout, **body)
        except httpx.TimeoutException:
            raise ApiError(
                f"The control plane API at {self.base_url} did not answer {method} {path} within "
                f"{self._timeout:g} s; it may be overloaded, try again shortly."
            ) from None
        except httpx.HTTPError as err:
            raise ApiError(
                f"Cannot reach the control plane API at {self.base_url} ({_reason(err)}). Is it "
                f"running, and is API_BASE_URL right?"
            ) from None
        if response.status_code == 409:  # a refusal the API explains itself (e.g. a run is active)
            raise ApiError(error_detail(response))
        if response.status_code in (401, 403):
            raise ApiError(
                f"The control plane API refused {method} {path} (HTTP {response.status_code}): set "
                f"FUNCTION_KEY to the Function app's key."
            )
        if response.status_code >= 400:
            raise ApiError(
                f"The control plane API answered {method} {path} with HTTP {response.status_code}: "
                f"{error_detail(response)}"
            )
        try:
            return answer.model_validate_json(response.content)
        except ValidationError:
            raise ApiError(
                f"The control plane API answered {method} {path} with something that is not its "
                f"documented answer (is API_BASE_URL pointing at the right service?)."
            ) from None


def error_detail(response: httpx.Response, limit: int = 300) -> str:
    """The message inside an error answer: FastAPI's "detail", a "message"/"error" field, or the text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            if body.get(key):
                return str(body[key])[:limit]
    text = response.text.strip()
    return text[:limit] if text else response.reason_phrase or "no details given"


def _reason(err: httpx.HTTPError) -> str:
    if isinstance(err, httpx.ConnectError):
        return "connection refused or host not found"
    return type(err).__name__
