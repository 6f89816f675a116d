"""Ask the scoring endpoint (aks_jobs/score.py behind azmlinfsrv or an AML online endpoint) to complete a prompt,
streamed piece by piece.

Every failure becomes a ScoringError with a message for the person chatting, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from pipeline_contracts.scoring import (
    INFO_REQUEST,
    ModelInfo,
    NoGeneration,
    StreamError,
    StreamPiece,
    parse_model_info,
    parse_response,
)
from ui.api_client import error_detail

Streamed = TypeVar("Streamed", StreamPiece, StreamError)


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
    num_return_sequences: int = 1  # alternatives, shown side by side
    stop: tuple[str, ...] = ()  # the answer ends before the first of these


@dataclass(frozen=True)
class Answer:
    texts: list[str]  # the continuations only, one per alternative; the scoring script does not repeat the prompt
    model_name: str
    model_version: str
    parameters: dict[str, Any]  # what the server actually used (seed included), to reproduce the answer
    history_turns: int = 0  # earlier turns the server fitted into the model's window
    kinds: tuple[str, ...] = ()  # the document kinds of the model that answered

    @property
    def text(self) -> str:
        return self.texts[0]


@dataclass(frozen=True)
class Piece:
    """Text the model just wrote for one alternative."""

    sequence: int
    text: str


def stream(
    scoring_url: str | None,
    prompt: str,
    settings: GenerationSettings,
    *,
    history: Sequence[str] = (),
    instruction: bool = False,
    input_text: str = "",
    kind: str = "",
    key: str = "",
    timeout_s: float = 120.0,
) -> Iterator[Piece | Answer]:
    """Pieces of text as the model writes them (Server-Sent Events), then the whole Answer.

    `history`: earlier turns, oldest first, sent as context; the server keeps the newest that fit the model.
    `instruction`: `prompt` is an instruction (`input_text` its Input section); the scoring script puts it in
    the template the model was trained on and answers with the response alone.
    `kind`: a document kind of the model; the scoring script starts the prompt with its token `<|kind|> `.
    An endpoint that answers with plain JSON (no streaming) gives just the Answer.
    """
    if not scoring_url:
        raise ScoringError(
            "No model is deployed yet. Upload PDFs on the Knowledge Base page; the chat works "
            "once the status says New model deployed."
        )
    if not prompt.strip():
        raise ScoringError(
            "Type an instruction for the model."
            if instruction
            else "Type the beginning of a sentence for the model to complete."
        )
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"prompt": prompt, **asdict(settings), "stream": True, **({"history": list(history)} if history else {})}
    if instruction:
        body.update(format="instruction", **({"input": input_text} if input_text.strip() else {}))
    if kind:
        body["kind"] = kind
    try:
        with httpx.stream("POST", scoring_url, json=body, headers=headers, timeout=timeout_s) as response:
            if response.status_code >= 400:
                response.read()
                raise _refusal(scoring_url, response)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                response.read()
                yield _answer(response)
                return
            for event, data in _events(response.iter_lines()):
                if event == "done":
                    yield _answer_from(data)
                    return
                if event == "error":
                    raise ScoringError(f"The model stopped before finishing: {_parsed(StreamError, data).message}")
                piece = _parsed(StreamPiece, data)
                if piece.prompt == 0:
                    yield Piece(piece.sequence, piece.text)
    except httpx.TimeoutException:
        raise ScoringError(
            f"The model did not answer within {timeout_s:g} s. Try fewer new tokens, or try "
            f"again when the endpoint is less busy."
        ) from None
    except httpx.HTTPError:
        raise ScoringError(
            f"The scoring endpoint at {scoring_url} is not answering (connection refused or "
            f"host not found). It may be starting or down; try again in a minute."
        ) from None
    raise ScoringError("The answer stream ended before the answer was complete; try again.")


def _events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event name, JSON data) per Server-Sent Event."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[len("event:") :].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:") :].strip())


def _refusal(scoring_url: str, response: httpx.Response) -> ScoringError:
    if response.status_code == 400:
        return ScoringError(f"The model refused the request: {error_detail(response)}")
    if response.status_code in (401, 403):
        return ScoringError(
            f"The scoring endpoint refused access (HTTP {response.status_code}): set "
            f"AML_SUBSCRIPTION_ID, AML_RESOURCE_GROUP, AML_WORKSPACE and AML_ENDPOINT_NAME so the UI "
            f"fetches tokens with its identity, or SCORING_KEY to a current key or token."
        )
    if response.status_code == 404:
        return ScoringError(
            f"Nothing is deployed at {scoring_url} (HTTP 404). The deployment may be in "
            f"progress; check the Knowledge Base status."
        )
    if response.status_code == 503:
        return ScoringError(
            f"The endpoint is not serving a model right now (HTTP 503: {error_detail(response)}). "
            f"A deployment may be starting or busy; try again in a minute."
        )
    return ScoringError(f"The scoring endpoint failed (HTTP {response.status_code}): {error_detail(response)}")


def _answer(response: httpx.Response) -> Answer:
    return _answer_from(response.content)


def _answer_from(body: str | bytes) -> Answer:
    try:
        answer = parse_response(body)
    except NoGeneration:
        raise ScoringError(
            "The scoring endpoint answered without a generation; is SCORING_URL pointing at the model's /score?"
        ) from None
    return Answer(
        texts=answer.generations[0],
        model_name=answer.model.name,
        model_version=answer.model.version,
        parameters=answer.parameters,
        history_turns=answer.usage.history_turns,
        kinds=tuple(answer.model.kinds),
    )


def model_info(scoring_url: str, *, key: str = "", timeout_s: float = 10.0) -> ModelInfo | None:
    """What the endpoint serves (its model's document kinds), or None when it cannot say: not answering, or a
    scoring script from before the info request (it refuses the unknown field)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.post(scoring_url, json=INFO_REQUEST, headers=headers, timeout=timeout_s)
        return parse_model_info(response.content) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _parsed(event: type[Streamed], data: str) -> Streamed:
    try:
        return event.model_validate_json(data)
    except ValidationError:
        raise ScoringError("The scoring endpoint streamed something that is not an answer.") from None
