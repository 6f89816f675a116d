"""A scoring request's own work, on its own thread: tokenize and fit it into the model's window (prepare), then
turn the engine's tokens into text (Follower): stop sequences, streamed pieces, the final Completion.

Nothing here runs on the engine's thread, so a request whose text cannot be encoded or decoded fails alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from aks_jobs.lm.decoding import Row, decode
from aks_jobs.lm.prompt_format import response_only
from aks_jobs.lm.scoring_request import RequestError, ScoreRequest

TURN_SEPARATOR = "\n"  # between earlier turns and the prompt in multi-turn mode


@dataclass(frozen=True)
class Prepared:
    """A request tokenized and fitted: one Row per sequence, num_return_sequences per prompt, side by side."""

    request: ScoreRequest
    rows: list[Row]
    prompt_tokens: int
    history_turns: int  # earlier turns that fit the window (the newest ones)


@dataclass(frozen=True)
class Completion:
    generations: list[list[str]]  # per prompt, num_return_sequences continuations (prompt text not repeated)
    prompt_tokens: int
    completion_tokens: int
    history_turns: int = 0


def prepare(tokenizer: PreTrainedTokenizerBase, request: ScoreRequest, context: int) -> Prepared:
    """Raise RequestError naming the prompt that does not fit `context` tokens with max_new_tokens."""
    if request.max_new_tokens >= context:
        raise RequestError(
            "max_new_tokens", f"must be below the model's context of {context} tokens, got {request.max_new_tokens}"
        )
    try:
        prompts = tokenizer(list(request.prompt_texts))["input_ids"]
        turns = tokenizer([turn + TURN_SEPARATOR for turn in request.history])["input_ids"] if request.history else []
    except Exception as err:  # noqa: BLE001 - whatever the tokenizer refuses is this request's problem only
        raise RequestError("prompt", f"could not be tokenized: {err}") from None
    for i, ids in enumerate(prompts):
        name = f"prompt[{i}]" if request.prompt_is_list else "prompt"
        if not ids:
            raise RequestError(name, "encodes to no tokens; send some text")
        if len(ids) + request.max_new_tokens > context:
            raise RequestError(
                name,
                f"is {len(ids)} tokens; with max_new_tokens={request.max_new_tokens} that "
                f"exceeds the model's context of {context} tokens: shorten the prompt "
                f"or lower max_new_tokens",
            )
    kept = 0
    if turns:  # newest turns first while they fit; the oldest are dropped
        room = context - request.max_new_tokens - len(prompts[0])
        for ids in reversed(turns):
            if len(ids) > room:
                break
            room -= len(ids)
            kept += 1
        prompts = [[token for ids in turns[len(turns) - kept :] for token in ids] + prompts[0]]
    return Prepared(
        request=request, rows=_rows(request, prompts), prompt_tokens=sum(map(len, prompts)), history_turns=kept
    )


def _rows(request: ScoreRequest, prompts: list[list[int]]) -> list[Row]:
    """num_return_sequences rows per prompt, next to each other; sampled rows get their uniform numbers."""
    uniforms: torch.Tensor | None = None
    if request.do_sample:
        seeded = torch.Generator().manual_seed(request.seed)
        uniforms = torch.rand((request.rows, request.max_new_tokens), generator=seeded)
    settings = {
        "max_new_tokens": request.max_new_tokens,
        "do_sample": request.do_sample,
        "temperature": request.temperature,
        "top_k": request.top_k,
        "top_p": request.top_p,
        "repetition_penalty": request.repetition_penalty,
    }
    repeated = [prompt for prompt in prompts for _ in range(request.num_return_sequences)]
    return [
        Row(prompt=prompt, uniforms=None if uniforms is None else uniforms[i], **settings)
        for i, prompt in enumerate(repeated)
    ]


@dataclass
class RowText:
    """One sequence's text as its tokens arrive; it ends before the first stop sequence."""

    tokenizer: PreTrainedTokenizerBase
    stop: Sequence[str]
    ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters already handed out as pieces
    done: bool = False

    def add(self, token: int) -> str:
        """Take a token; return the text that is now final (a piece to stream). Sets `done` at a stop sequence."""
        self.ids.append(token)
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        found = [index for index in (self.text.find(stop) for stop in self.stop) if index >= 0]
        if found:
            self.text, self.done = self.text[: min(found)], True
            return self.finish()
        # Held back: a partial UTF-8 character, and what may still become the start of a stop sequence.
        end = len(self.text) - (max(map(len, self.stop)) - 1 if self.stop else 0)
        while end > self.sent and self.text[end - 1] == "\ufffd":
            end -= 1
        return self._piece(end)

    def finish(self) -> str:
        self.done = True
        return self._piece(len(self.text))

    def _piece(self, end: int) -> str:
        if end <= self.sent:
            return ""
        piece, self.sent = self.text[self.sent : end], end
        return piece


def completion(prepared: Prepared, texts: Sequence[RowText]) -> Completion:
    per_prompt = prepared.request.num_return_sequences
    finish = response_only if prepared.request.format == "instruction" else str
    return Completion(
        generations=[[finish(row.text) for row in texts[i : i + per_prompt]] for i in range(0, len(texts), per_prompt)],
        prompt_tokens=prepared.prompt_tokens,
        completion_tokens=sum(len(row.ids) for row in texts),
        history_turns=prepared.history_turns,
    )


def generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, requests: Sequence[ScoreRequest]
) -> list[Completion | RequestError]:
    """Answer several requests with one decode loop, each as if it had run alone (no server, no threads).

    A request that does not fit the model's context gets its RequestError; the others still run.
    """
    prepared: list[Prepared | RequestError] = []
    for request in requests:
        try:
            prepared.append(prepare(tokenizer, request, model.config.n_positions))
        except RequestError as err:
            prepared.append(err)
    rows = [row for item in prepared if isinstance(item, Prepared) for row in item.rows]
    new_tokens = iter(decode(model, rows, eos_token_ids=eos_ids(model)) if rows else [])
    answers: list[Completion | RequestError] = []
    for item in prepared:
        if isinstance(item, RequestError):
            answers.append(item)
            continue
        texts = [RowText(tokenizer, item.request.stop_sequences) for _ in item.rows]
        for text in texts:
            for token in next(new_tokens):
                if not text.done:
                    text.add(token)
        answers.append(completion(item, texts))
    return answers


def eos_ids(model: PreTrainedModel) -> set[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    return {eos} if isinstance(eos, int) else set(eos)
