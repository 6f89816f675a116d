"""The scoring endpoint's answers (aks_jobs/score.py behind azmlinfsrv or an AML online endpoint), and the
smoke-test request both backends send a new deployment.

The request body itself is validated by the server (aks_jobs/lm/scoring_request.py), whose limits depend on
the device it runs on; clients send the fields documented there.

POST /score -> 200 ScoreResponse | 400/503/500 ErrorBody; POST /score {"info": true} -> 200 ModelInfo;
with "stream": true, Server-Sent Events: StreamPiece per piece of text, then `event: done` with a
ScoreResponse, or `event: error` with a StreamError.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline_contracts.document_kinds import Kind

# Greedy and short: the smoke test checks that the deployment answers, not what it says.
SMOKE_MAX_NEW_TOKENS = 20


class ServedModel(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)

    name: str
    version: str
    weights: str = ""
    # Document kinds the model has a token for (pipeline_contracts.document_kinds): a request's "kind" starts
    # its prompt with `<|kind|> `.
    kinds: list[Kind] = Field(default_factory=list)


class InfoRequest(BaseModel):
    """The request that asks what is served instead of a generation (for the UI's kind picker): nothing is queued."""

    model_config = ConfigDict(extra="forbid")

    info: Literal[True]


INFO_REQUEST: dict[str, Any] = InfoRequest(info=True).model_dump()


class ModelInfo(BaseModel):
    model: ServedModel


class Usage(BaseModel):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    history_turns: int = Field(0, ge=0)  # earlier turns the server fitted into the model's window


class ScoreResponse(BaseModel):
    # One list per prompt, each holding num_return_sequences continuations (the prompt is not repeated).
    generations: list[list[str]] = Field(min_length=1)
    model: ServedModel
    usage: Usage
    parameters: dict[str, Any]  # the settings actually used (seed included), to reproduce the answer

    @property
    def text(self) -> str:
        """The first continuation of the first prompt."""
        return self.generations[0][0]


class ErrorBody(BaseModel):
    message: str
    field: str | None = None  # the request field at fault, on a 400


class StreamPiece(BaseModel):
    index: int = Field(ge=0)  # row: prompt * num_return_sequences + sequence
    prompt: int = Field(ge=0)
    sequence: int = Field(ge=0)
    text: str


class StreamError(BaseModel):
    message: str
    status: int


class NoGeneration(ValueError):
    """A scoring answer that holds no generation."""


def _decoded(body: str | bytes) -> Any:
    """azmlinfsrv encodes run()'s JSON text once more when it returns a string, so a JSON string is decoded again."""
    decoded = json.loads(body)
    return json.loads(decoded) if isinstance(decoded, str) else decoded


def parse_model_info(body: str | bytes) -> ModelInfo:
    """The answer to INFO_REQUEST; raises ValueError when the body is not one."""
    return ModelInfo.model_validate(_decoded(body))


def parse_response(body: str | bytes) -> ScoreResponse:
    """A 200 answer's body as a ScoreResponse; raise NoGeneration (with a short quote of it) otherwise."""
    try:
        response = ScoreResponse.model_validate(_decoded(body))
        response.text  # noqa: B018 - at least one continuation of the first prompt
    except (ValueError, ValidationError, IndexError):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        raise NoGeneration(f"the answer holds no generation: {text[:300]!r}") from None
    return response


def smoke_request(prompt: str, *, stream: bool = False) -> dict[str, Any]:
    """The request every backend's smoke test sends a new deployment."""
    return {
        "prompt": prompt,
        "max_new_tokens": SMOKE_MAX_NEW_TOKENS,
        "do_sample": False,
        **({"stream": True} if stream else {}),
    }


def streamed_answer(body: str) -> tuple[list[str], ScoreResponse]:
    """A streamed scoring answer (Server-Sent Events, see aks_jobs/score.py): the text pieces joined per sequence
    (by "index"), and the final `done` event's answer. Raises ValueError for an `error` event or no `done`."""
    texts: dict[int, str] = {}
    for block in body.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line]
        if not lines:
            continue
        event = next((line[len("event: ") :] for line in lines if line.startswith("event: ")), "message")
        data = "\n".join(line[len("data: ") :] for line in lines if line.startswith("data: "))
        if event == "done":
            return [texts[i] for i in sorted(texts)], ScoreResponse.model_validate_json(data)
        if event == "error":
            raise ValueError(f"the stream ended with an error: {StreamError.model_validate_json(data).message}")
        piece = StreamPiece.model_validate_json(data)
        texts[piece.index] = texts.get(piece.index, "") + piece.text
    raise ValueError(f"the stream ended without its done event: {body[-300:]!r}")
