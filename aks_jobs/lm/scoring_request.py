"""The scoring request: its JSON body validated into a ScoreRequest on the request's own thread.

Everything a client can get wrong is refused here, before anything is queued, with a RequestError naming the
field: text that is not valid Unicode, prompts over the character cap, numbers out of range or too long to
parse, and values over the limits of the device serving (lm.serving_limits).
"""

from __future__ import annotations

import json
import secrets
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from aks_jobs.lm.prompt_format import SECTION_START, instruction_prompt
from aks_jobs.lm.serving_limits import ServingLimits
from pipeline_contracts.document_kinds import prompt_prefix
from pipeline_contracts.scoring import INFO_REQUEST, ErrorBody, InfoRequest

MAX_SEED = 2**32 - 1  # fits a JavaScript number, so a browser can echo a seed back unchanged
# Lower bounds on temperature and repetition_penalty keep scaled logits finite: near-zero values overflow
# them to inf and sampling fails.
TEMPERATURE_RANGE = (0.01, 2.0)
REPETITION_PENALTY_RANGE = (0.1, 10.0)
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 64
MAX_HISTORY_TURNS = 64
# Python refuses to turn longer digit strings into an int (a ValueError mid-parse); no field needs more.
_MAX_INT_DIGITS = 100


class RequestError(ValueError):
    """A client mistake in a scoring request; the server answers HTTP 400 naming `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"'{field}' {message}")
        self.field = field

    def body(self) -> ErrorBody:
        return ErrorBody(message=str(self), field=self.field)


def _unicode_text(text: str) -> str:
    """Refuse lone surrogates ("\\ud800" is valid JSON but no tokenizer can encode it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"is not valid Unicode text (a lone surrogate {text[err.start]!r} at character "
            f"{err.start}); send UTF-8 text"
        ) from None
    return text


Text = Annotated[str, Field(strict=True), AfterValidator(_unicode_text)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class ScoreRequest(BaseModel):
    """One validated request. Defaults are the original design's pipeline() settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompts: tuple[Text, ...] = Field(min_length=1)
    prompt_is_list: bool = False
    # Earlier turns of a conversation, oldest first: sent before the prompt as context while they fit the
    # model's window, the oldest dropped first (lm.generation.prepare).
    history: tuple[Text, ...] = Field((), max_length=MAX_HISTORY_TURNS)
    max_new_tokens: StrictInt = Field(50, ge=1)
    temperature: Number = Field(0.7, ge=TEMPERATURE_RANGE[0], le=TEMPERATURE_RANGE[1])
    top_k: StrictInt = Field(50, ge=0)
    top_p: Number = Field(0.95, gt=0.0, le=1.0)
    repetition_penalty: Number = Field(1.0, ge=REPETITION_PENALTY_RANGE[0], le=REPETITION_PENALTY_RANGE[1])
    num_return_sequences: StrictInt = Field(1, ge=1)
    do_sample: StrictBool = True
    seed: StrictInt = Field(default_factory=lambda: secrets.randbelow(MAX_SEED + 1), ge=0, le=MAX_SEED)
    stop: tuple[Annotated[Text, Field(min_length=1, max_length=MAX_STOP_CHARS)], ...] = Field(
        (), max_length=MAX_STOP_SEQUENCES
    )
    stream: StrictBool = False
    # "instruction": each prompt is an instruction, asked in the template the model was trained on
    # (lm.prompt_format) with `input` as its Input section; the answer is the response alone.
    format: Literal["completion", "instruction"] = "completion"
    input: Text = ""
    # A document kind the model knows (seed 003): each prompt starts with `<|kind|> ` (before the template).
    kind: Text = ""

    @field_validator("prompts", "history")
    @classmethod
    def _texts_within_limits(cls, texts: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        limits = _limits(info)
        if info.field_name == "prompts" and len(texts) > limits.max_prompts:
            raise ValueError(f"must hold 1 to {limits.max_prompts} prompts, got {len(texts)}")
        for i, text in enumerate(texts):
            if info.field_name == "prompts" and not text.strip():
                raise ValueError(f"item {i}: must not be empty or only whitespace")
            if len(text) > limits.max_prompt_chars:
                raise ValueError(
                    f"item {i}: is {len(text):,} characters; at most {limits.max_prompt_chars:,} "
                    f"are accepted (the model reads about 4 characters per token)"
                )
        return texts

    @field_validator("input")
    @classmethod
    def _input_within_limits(cls, text: str, info: ValidationInfo) -> str:
        limit = _limits(info).max_prompt_chars
        if len(text) > limit:
            raise ValueError(f"is {len(text):,} characters; at most {limit:,} are accepted")
        return text.strip()

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str, info: ValidationInfo) -> str:
        known = (info.context or {}).get("kinds", ())
        if kind and kind not in known:
            knows = f"it knows {', '.join(known)}" if known else "it was trained without document kinds"
            raise ValueError(f"{kind!r} is not a document kind of this model ({knows}); leave it out or pick one")
        return kind

    @field_validator("max_new_tokens", "num_return_sequences")
    @classmethod
    def _within_device_limits(cls, value: int, info: ValidationInfo) -> int:
        limit = getattr(_limits(info), info.field_name.replace("num_", "max_"))
        if value > limit:
            raise ValueError(f"must be at most {limit} on this deployment ({_limits(info).device}), got {value}")
        return value

    @model_validator(mode="after")
    def _rows_fit(self, info: ValidationInfo) -> ScoreRequest:
        if not self.do_sample and self.num_return_sequences > 1:
            raise RequestError(
                "num_return_sequences",
                "must be 1 when do_sample is false: greedy decoding gives one sequence per prompt",
            )
        if self.input and self.format != "instruction":
            raise RequestError("input", 'is only for "format": "instruction" (the Input section of an instruction)')
        if self.history and self.format == "instruction":
            raise RequestError("history", 'goes with "format": "completion"; an instruction is answered on its own')
        if self.history and self.prompt_is_list:
            raise RequestError("history", "goes with a single prompt string, not a list of prompts")
        limit = _limits(info).max_request_rows
        if self.rows > limit:
            raise RequestError(
                "num_return_sequences",
                f"times the number of prompts ({len(self.prompts)}) "
                f"must be at most {limit}; send fewer prompts or sequences",
            )
        return self

    def parameters(self) -> dict[str, Any]:
        """The effective generation settings, echoed to the client so any answer can be reproduced."""
        unset = set() if self.kind else {"kind"}
        return self.model_dump(mode="json", exclude={"prompts", "prompt_is_list", "history", "stream", *unset})

    @property
    def prompt_texts(self) -> tuple[str, ...]:
        """What the model is given: the prompts, or in instruction format each one in the template; each after
        its kind's token when the request names a kind."""
        prefix = prompt_prefix(self.kind) if self.kind else ""
        if self.format == "instruction":
            return tuple(prefix + instruction_prompt(prompt, self.input) for prompt in self.prompts)
        return tuple(prefix + prompt for prompt in self.prompts)

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        """The client's stop sequences; an instruction's response also ends where another section starts."""
        return (*self.stop, SECTION_START) if self.format == "instruction" else self.stop

    @property
    def rows(self) -> int:
        """Sequences this request adds to the running batch."""
        return len(self.prompts) * self.num_return_sequences


def _limits(info: ValidationInfo) -> ServingLimits:
    return (info.context or {}).get("limits") or ServingLimits.for_device("cpu")


FIELDS = ("prompt", *(name for name in ScoreRequest.model_fields if name not in ("prompts", "prompt_is_list")))


def is_info_request(raw: str | bytes) -> bool:
    """Whether the body is INFO_REQUEST (what is served?) rather than a request for text."""
    if len(raw) > 4 * len(json.dumps(INFO_REQUEST)):  # a generation request is never parsed twice
        return False
    try:
        InfoRequest.model_validate_json(raw)
    except ValidationError:
        return False
    return True


def parse_request(raw: str | bytes, limits: ServingLimits | None = None, kinds: tuple[str, ...] = ()) -> ScoreRequest:
    """Validate a request body; raise RequestError naming the first bad field. `kinds`: the model's document kinds.

    JSON null for an optional field means "use the default". A missing seed gets a fresh random one.
    """
    limits = limits or ServingLimits.for_device("cpu")
    body = _decode(raw, limits)
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise RequestError(
            unknown[0], f"is not a known field (unknown: {', '.join(unknown)}); allowed fields: {', '.join(FIELDS)}"
        )
    prompt = body.pop("prompt", None)
    if prompt is None:
        raise RequestError("prompt", 'is required: a non-empty string or a list of them, e.g. {"prompt": "Once upon"}')
    if not isinstance(prompt, (str, list)):
        raise RequestError("prompt", f"must be a string or a list of strings, got {_kind(prompt)}")
    fields = {name: value for name, value in body.items() if value is not None}
    fields.update(prompts=prompt if isinstance(prompt, list) else [prompt], prompt_is_list=isinstance(prompt, list))
    try:
        return ScoreRequest.model_validate(fields, context={"limits": limits, "kinds": kinds})
    except ValidationError as err:
        raise _request_error(err.errors()[0], isinstance(prompt, list)) from None


def _request_error(error: dict[str, Any], prompt_is_list: bool) -> RequestError:
    raised = (error.get("ctx") or {}).get("error")
    if isinstance(raised, RequestError):  # from a check across fields: it names its field itself
        return raised
    location = list(error["loc"])
    if location and location[0] == "prompts":
        location[0] = "prompt"
    field = str(location[0]) if location else "body"
    message = error["msg"]
    if message.startswith("Value error, "):  # our own validators: the message is written for the client
        message = message.removeprefix("Value error, ")
        if message.startswith("item "):  # "item 3: ..." from a per-text check
            index, _, message = message.removeprefix("item ").partition(": ")
            location[1:] = [int(index)]
    else:
        message = f"{message[0].lower()}{message[1:]}, got {_kind(error.get('input'))}"
    if len(location) > 1 and isinstance(location[1], int) and (field != "prompt" or prompt_is_list):
        field = f"{field}[{location[1]}]"
    return RequestError(field, message)


def _decode(raw: str | bytes, limits: ServingLimits) -> dict[str, Any]:
    if len(raw) > limits.max_body_chars:  # refused before parsing: an 8 MiB body costs nobody else anything
        raise RequestError(
            "body", f"is {len(raw):,} characters; at most {limits.max_body_chars:,} are accepted: send shorter prompts"
        )
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise RequestError("body", f"is not UTF-8 text: {err}") from None
    if not raw.strip():
        # azmlinfsrv passes "" when Content-Type is form-encoded (curl -d's default): the form parser took it.
        raise RequestError(
            "body", 'is empty; send a JSON object such as {"prompt": "Once upon"} with Content-Type: application/json'
        )
    try:
        body = json.loads(raw, parse_int=_integer)
    except json.JSONDecodeError as err:
        raise RequestError(
            "body", f'is not valid JSON ({err}); send an object like {{"prompt": "Once upon"}}'
        ) from None
    if not isinstance(body, dict):
        raise RequestError("body", f'must be a JSON object like {{"prompt": "Once upon"}}, got {_kind(body)}')
    return body


def _integer(digits: str) -> int | float:
    # A longer number stays a float (inf when huge): range checks refuse it, naming its field.
    return int(digits) if len(digits) <= _MAX_INT_DIGITS else float(digits)


def _kind(value: Any) -> str:
    """The JSON name of a parsed value's type (with the value when short), for error messages."""
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        tuple: "an array",
        dict: "an object",
        type(None): "null",
    }
    kind = names.get(type(value), type(value).__name__)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        shown = repr(value)
        return f"{kind} {shown}" if len(shown) <= 40 else f"{kind} of {len(shown)} digits"
    return kind
