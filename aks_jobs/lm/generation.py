"""Scoring requests: parse and validate the JSON body; answer a batch of requests with one decode loop."""
from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lm.decoding import Row, decode
from lm.prompt_format import instruction_prompt, response_only

# Limits keep one request within a predictable time and memory budget on one GPU (or a CPU pod).
MAX_PROMPTS = 32
MAX_NEW_TOKENS = 512
MAX_RETURN_SEQUENCES = 8
MAX_SEQUENCES = 64  # prompts x num_return_sequences: the most rows of one decode batch (see lm.batcher)
# Lower bounds on temperature and repetition_penalty keep scaled logits finite: near-zero values overflow
# them to inf and sampling fails.
TEMPERATURE_RANGE = (0.01, 2.0)
REPETITION_PENALTY_RANGE = (0.1, 10.0)
MAX_SEED = 2**32 - 1  # fits a JavaScript number, so a browser can echo a seed back unchanged


class RequestError(ValueError):
    """A client mistake in a scoring request; the server answers HTTP 400 naming `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"'{field}' {message}")
        self.field = field

    def to_json(self) -> dict[str, str]:
        return {"message": str(self), "field": self.field}


@dataclass(frozen=True)
class GenerationRequest:
    """One validated request. Defaults are the original design's pipeline() settings."""

    prompts: tuple[str, ...]
    prompt_is_list: bool = False
    max_new_tokens: int = 50
    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    num_return_sequences: int = 1
    do_sample: bool = True
    seed: int = 0
    # "instruction": each prompt is an instruction, asked in the template the model was trained on
    # (lm.prompt_format) with `input` as its Input section; the answer is the response alone.
    format: str = "completion"
    input: str = ""

    def parameters(self) -> dict[str, Any]:
        """The effective generation settings, echoed to the client so any answer can be reproduced."""
        settings = asdict(self)
        del settings["prompts"], settings["prompt_is_list"]
        return settings

    @property
    def rows(self) -> int:
        """Sequences this request adds to a decode batch."""
        return len(self.prompts) * self.num_return_sequences


@dataclass(frozen=True)
class Completion:
    generations: list[list[str]]  # per prompt, num_return_sequences continuations (prompt text not repeated)
    prompt_tokens: int
    completion_tokens: int


_FIELDS = ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty",
           "num_return_sequences", "do_sample", "seed", "format", "input")
FORMATS = ("completion", "instruction")


def parse_request(raw: str | bytes) -> GenerationRequest:
    """Validate a request body; raise RequestError naming the first bad field.

    JSON null for an optional field means "use the default". A missing seed gets a fresh random one.
    """
    body = _decode(raw)
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise RequestError(unknown[0], f"is not a known field (unknown: {', '.join(unknown)}); "
                                       f"allowed fields: {', '.join(_FIELDS)}")
    prompts, prompt_is_list = _prompts(body.get("prompt"))
    defaults = GenerationRequest  # dataclass defaults are class attributes
    do_sample = _boolean("do_sample", body.get("do_sample"), defaults.do_sample)
    num_return_sequences = _integer("num_return_sequences", body.get("num_return_sequences"),
                                    defaults.num_return_sequences, 1, MAX_RETURN_SEQUENCES)
    if not do_sample and num_return_sequences > 1:
        raise RequestError("num_return_sequences", "must be 1 when do_sample is false: greedy decoding "
                                                   "gives one sequence per prompt")
    if len(prompts) * num_return_sequences > MAX_SEQUENCES:
        raise RequestError("num_return_sequences", f"times the number of prompts ({len(prompts)}) must be at "
                                                   f"most {MAX_SEQUENCES}; send fewer prompts or sequences")
    seed = _integer("seed", body.get("seed"), None, 0, MAX_SEED)
    format_, input_text = _format(body.get("format"), body.get("input"))
    if format_ == "instruction":
        prompts = tuple(instruction_prompt(prompt, input_text) for prompt in prompts)
    return GenerationRequest(
        format=format_,
        input=input_text,
        prompts=prompts,
        prompt_is_list=prompt_is_list,
        max_new_tokens=_integer("max_new_tokens", body.get("max_new_tokens"), defaults.max_new_tokens,
                                1, MAX_NEW_TOKENS),
        temperature=_number("temperature", body.get("temperature"), defaults.temperature, *TEMPERATURE_RANGE),
        top_k=_integer("top_k", body.get("top_k"), defaults.top_k, 0, None),
        top_p=_number("top_p", body.get("top_p"), defaults.top_p, 0.0, 1.0, low_included=False),
        repetition_penalty=_number("repetition_penalty", body.get("repetition_penalty"),
                                   defaults.repetition_penalty, *REPETITION_PENALTY_RANGE),
        num_return_sequences=num_return_sequences,
        do_sample=do_sample,
        seed=secrets.randbelow(MAX_SEED + 1) if seed is None else seed,
    )


def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
             requests: Sequence[GenerationRequest]) -> list[Completion | RequestError]:
    """Answer several requests with ONE batched decode loop, each as if it had run alone.

    A request whose prompts do not fit the model's context gets its RequestError; the others still run.
    Sampled rows draw from a generator seeded with their request's seed, so a seeded request gives the same
    text whatever it shares a batch with. The tokenizer needs a pad token (see lm.serving_model).
    """
    context = model.config.max_position_embeddings
    encoded: list[list[list[int]] | RequestError] = []
    for request in requests:
        try:
            encoded.append(_encode(tokenizer, request, context))
        except RequestError as err:
            encoded.append(err)
    rows = [row for request, prompts in zip(requests, encoded) if not isinstance(prompts, RequestError)
            for row in _rows(request, prompts)]
    new_tokens = iter(decode(model, rows, pad_token_id=tokenizer.pad_token_id, eos_token_ids=_eos_ids(model))
                      if rows else [])

    answers: list[Completion | RequestError] = []
    for request, prompts in zip(requests, encoded):
        if isinstance(prompts, RequestError):
            answers.append(prompts)
            continue
        tokens = [[next(new_tokens) for _ in range(request.num_return_sequences)] for _ in prompts]
        finish = response_only if request.format == "instruction" else str
        answers.append(Completion(
            generations=[[finish(tokenizer.decode(ids, skip_special_tokens=True)) for ids in per_prompt]
                         for per_prompt in tokens],
            prompt_tokens=sum(len(ids) for ids in prompts),
            completion_tokens=sum(len(ids) for per_prompt in tokens for ids in per_prompt)))
    return answers


def _encode(tokenizer: PreTrainedTokenizerBase, request: GenerationRequest, context: int) -> list[list[int]]:
    prompts = tokenizer(list(request.prompts))["input_ids"]
    _check_fits_context(request, [len(ids) for ids in prompts], context)
    return prompts


def _rows(request: GenerationRequest, prompts: list[list[int]]) -> list[Row]:
    """num_return_sequences rows per prompt, next to each other; sampled rows get their uniform numbers."""
    uniforms: torch.Tensor | None = None
    if request.do_sample:
        seeded = torch.Generator().manual_seed(request.seed)
        uniforms = torch.rand((request.rows, request.max_new_tokens), generator=seeded)
    settings = {"max_new_tokens": request.max_new_tokens, "do_sample": request.do_sample,
                "temperature": request.temperature, "top_k": request.top_k, "top_p": request.top_p,
                "repetition_penalty": request.repetition_penalty}
    repeated = [prompt for prompt in prompts for _ in range(request.num_return_sequences)]
    return [Row(prompt=prompt, uniforms=None if uniforms is None else uniforms[i], **settings)
            for i, prompt in enumerate(repeated)]


def _decode(raw: str | bytes) -> dict[str, Any]:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise RequestError("body", f"is not UTF-8 text: {err}") from None
    if not raw.strip():
        # azmlinfsrv passes "" when Content-Type is form-encoded (curl -d's default): the form parser took it.
        raise RequestError("body", 'is empty; send a JSON object such as {"prompt": "Once upon"} '
                                   "with Content-Type: application/json")
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as err:
        raise RequestError("body", f'is not valid JSON ({err}); send an object like {{"prompt": "Once upon"}}') \
            from None
    if not isinstance(body, dict):
        raise RequestError("body", f'must be a JSON object like {{"prompt": "Once upon"}}, got {_kind(body)}')
    return body


def _prompts(value: Any) -> tuple[tuple[str, ...], bool]:
    if value is None:
        raise RequestError("prompt", 'is required: a non-empty string or a list of them, e.g. {"prompt": "Once upon"}')
    if isinstance(value, str):
        return (_prompt_text("prompt", value),), False
    if not isinstance(value, list):
        raise RequestError("prompt", f"must be a string or a list of strings, got {_kind(value)}")
    if not 1 <= len(value) <= MAX_PROMPTS:
        raise RequestError("prompt", f"must hold 1 to {MAX_PROMPTS} prompts, got {len(value)}")
    return tuple(_prompt_text(f"prompt[{i}]", item) for i, item in enumerate(value)), True


def _format(value: Any, input_text: Any) -> tuple[str, str]:
    format_ = "completion" if value is None else value
    if format_ not in FORMATS:
        raise RequestError("format", f"must be one of {', '.join(FORMATS)}, got {json.dumps(value)}")
    if input_text is None:
        return format_, ""
    if format_ != "instruction":
        raise RequestError("input", 'is only for "format": "instruction" (the Input section of an instruction)')
    if not isinstance(input_text, str):
        raise RequestError("input", f"must be a string, got {_kind(input_text)}")
    return format_, input_text.strip()


def _prompt_text(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise RequestError(field, f"must be a string, got {_kind(value)}")
    if not value.strip():
        raise RequestError(field, "must not be empty or only whitespace")
    return value


def _integer(field: str, value: Any, default: int | None, low: int, high: int | None) -> int | None:
    if value is None:
        return default
    # bool is a subclass of int in Python, but true/false is not a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(field, f"must be an integer, got {_kind(value)}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise RequestError(field, f"must be {bounds}, got {value}")
    return value


def _number(field: str, value: Any, default: float, low: float, high: float, *,
            low_included: bool = True) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(field, f"must be a number, got {_kind(value)}")
    above_low = value >= low if low_included else value > low
    if not (above_low and value <= high):  # also rejects NaN, which Python's json accepts
        bounds = f"between {low} and {high}" if low_included else f"greater than {low} and at most {high}"
        raise RequestError(field, f"must be {bounds}, got {value}")
    return float(value)


def _boolean(field: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(field, f"must be true or false, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _check_fits_context(request: GenerationRequest, prompt_lengths: list[int], context: int) -> None:
    if request.max_new_tokens >= context:
        raise RequestError("max_new_tokens", f"must be below the model's context of {context} tokens, "
                                             f"got {request.max_new_tokens}")
    for i, length in enumerate(prompt_lengths):
        field = f"prompt[{i}]" if request.prompt_is_list else "prompt"
        if length == 0:
            raise RequestError(field, "encodes to no tokens; send some text")
        if length + request.max_new_tokens > context:
            raise RequestError(field, f"is {length} tokens; with max_new_tokens={request.max_new_tokens} that "
                                      f"exceeds the model's context of {context} tokens: shorten the prompt "
                                      f"or lower max_new_tokens")


def _eos_ids(model: PreTrainedModel) -> set[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    return {eos} if isinstance(eos, int) else set(eos)
