"""Batched autoregressive decoding where every row brings its own settings (nanoGPT-style, readable in one sitting).

One prefill over the left-padded prompts, then one KV-cached forward per new token for the whole batch. Each
row is processed like Hugging Face's generate() with that row's settings alone: repetition penalty, then (when
sampling) temperature, top-k and top-p, then argmax or a draw. Draws use the row's own uniform numbers by
inverse CDF, so a sampled row depends only on its prompt, settings and numbers, never on its batch
neighbours. (The logits themselves may still differ in the last bits with the batch's shape, so in bf16 a
near-tie can flip a token; in float32 that is vanishingly rare.)
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel


@dataclass(frozen=True)
class Row:
    """One sequence to continue. Greedy rows ignore temperature, top_k, top_p and uniforms."""

    prompt: list[int]
    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1.0: no nucleus filter
    repetition_penalty: float = 1.0
    uniforms: torch.Tensor | None = None  # max_new_tokens draws in [0, 1), one per step; required when sampling


class Settings:
    """The rows' settings as tensors on the model's device, plus the host-side facts that pick the work."""

    def __init__(self, rows: Sequence[Row], vocab_size: int, device: torch.device) -> None:
        def column(values: list, dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        sampling = [row.do_sample for row in rows]
        # top_k is min(k, vocab) as in HF; 0 means the whole vocabulary. Greedy rows get neutral settings.
        top_k = [min(row.top_k or vocab_size, vocab_size) if row.do_sample else 1 for row in rows]
        self.do_sample = column(sampling, torch.bool)
        self.temperature = column([row.temperature if row.do_sample else 1.0 for row in rows], torch.float32)
        self.top_k = column(top_k, torch.long)
        self.top_p = column([row.top_p if row.do_sample else 1.0 for row in rows], torch.float32)
        self.penalty = column([row.repetition_penalty for row in rows], torch.float32)
        self.any_sample = any(sampling)
        self.any_penalty = any(row.repetition_penalty != 1.0 for row in rows)
        # Sampling looks only at the best `candidates` tokens of each row: a top-k of the whole vocabulary
        # (let alone a full sort) costs far more than the rest of a step's processing on a CPU.
        self.candidates = max((k for k, s in zip(top_k, sampling) if s), default=1)


def penalize(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """HF's RepetitionPenaltyLogitsProcessor per row: scores of tokens already in the row are divided by the
    penalty (multiplied when negative). `seen` [rows, vocab] marks the prompt and generated tokens, not padding."""
    factor = penalty[:, None]
    penalized = torch.where(logits < 0, logits * factor, logits / factor)
    return torch.where(seen, penalized, logits)


def warp(scores: torch.Tensor, settings: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    """HF's Temperature-, TopK- and TopPLogitsWarper per row, on each row's best tokens.

    Returns (scores sorted best first, their token ids); filtered tokens score -inf, and tokens not returned
    are filtered for every row. Exact, ties included: HF's top-k keeps every token equal to the k-th score.
    """
    scaled = scores / settings.temperature[:, None]
    vocab = scaled.shape[-1]
    wanted = settings.candidates
    values, ids = torch.topk(scaled, min(wanted + 1, vocab))  # one extra to see a tie at the cut
    kth = values.gather(1, settings.top_k[:, None] - 1)
    if wanted < vocab:
        last = values[:, wanted - 1]
        cut_tie = settings.do_sample & (kth[:, 0] == last) & (values[:, wanted] == last)
        if bool(cut_tie.any()):  # tokens tied with a k-th score lie beyond the candidates: take them all
            values, ids = torch.sort(scaled, descending=True)
        else:
            values, ids = values[:, :wanted], ids[:, :wanted]
    values = values.masked_fill(values < kth, float("-inf"))

    # Top-p as HF computes it: ascending order, cumulative probability <= 1 - top_p is removed, the best kept.
    ascending = values.flip(-1)
    cumulative = ascending.softmax(-1).cumsum(-1)
    remove = cumulative <= (1 - settings.top_p[:, None])
    remove[:, -1] = False
    remove &= (settings.top_p < 1.0)[:, None]  # HF skips the warper at top_p=1.0
    values = ascending.masked_fill(remove, float("-inf")).flip(-1)
    return values, ids


def draw(values: torch.Tensor, ids: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Sample one token per row by inverse CDF: the first token whose cumulative probability exceeds u."""
    cdf = values.softmax(-1).cumsum(-1)
    target = uniforms[:, None] * cdf[:, -1:]
    index = torch.searchsorted(cdf, target, right=True)
    # Kept tokens are a prefix (best first); rounding may push u*total onto the flat tail: stay inside it.
    kept = (values > float("-inf")).sum(-1, keepdim=True)
    return ids.gather(1, torch.minimum(index, kept - 1))[:, 0]


def next_tokens(logits: torch.Tensor, seen: torch.Tensor, settings: Settings,
                uniforms: torch.Tensor) -> torch.Tensor:
    scores = penalize(logits, seen, settings.penalty) if settings.any_penalty else logits
    greedy = scores.argmax(-1)
    if not settings.any_sample:
        return greedy
    values, ids = warp(scores, settings)
    return torch.where(settings.do_sample, draw(values, ids, uniforms), greedy)


@torch.inference_mode()
def decode(model: PreTrainedModel, rows: Sequence[Row], *, pad_token_id: int,
           eos_token_ids: Collection[int]) -> list[list[int]]:
    """The new tokens of every row: up to and including its first EOS, at most its max_new_tokens.

    Every prompt plus its max_new_tokens must fit the model's context (the caller checks).
    """
    device = model.device
    count, width = len(rows), max(len(row.prompt) for row in rows)
    vocab = model.config.vocab_size
    settings = Settings(rows, vocab, device)
    limits = torch.tensor([row.max_new_tokens for row in rows], device=device)
    steps = max(row.max_new_tokens for row in rows)
    uniforms = torch.zeros(count, steps)
    for i, row in enumerate(rows):
        if row.do_sample:
            uniforms[i, :row.max_new_tokens] = row.uniforms
    uniforms = uniforms.to(device)
    eos = torch.tensor(sorted(eos_token_ids), dtype=torch.long, device=device)

    # Left padding: every prompt ends in the last column, where the first new token is predicted.
    tokens = torch.full((count, width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((count, width), dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, width - len(row.prompt):] = torch.tensor(row.prompt)
        mask[i, width - len(row.prompt):] = 1
    tokens, mask = tokens.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each prompt starts at position 0, as when alone
    # Tokens seen per row for the repetition penalty; padding goes to an extra column that is dropped.
    seen = torch.zeros((count, vocab + 1), dtype=torch.bool, device=device)
    seen.scatter_(1, tokens.masked_fill(mask == 0, vocab), True)
    seen = seen[:, :vocab]

    cache = DynamicCache(config=model.config)
    logits = model(input_ids=tokens, attention_mask=mask, position_ids=positions, past_key_values=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1].float()
    position = positions[:, -1]
    last_position = model.config.max_position_embeddings - 1
    generated = torch.full((count, steps), pad_token_id, dtype=torch.long, device=device)
    done = torch.zeros(count, dtype=torch.bool, device=device)
    rows_index = torch.arange(count, device=device)
    for step in range(steps):
        token = next_tokens(logits, seen, settings, uniforms[:, step]).masked_fill(done, pad_token_id)
        generated[:, step] = token
        seen[rows_index, token] = True
        done |= torch.isin(token, eos) | (limits <= step + 1)
        if bool(done.all()):
            break
        mask = torch.cat([mask, mask.new_ones((count, 1))], dim=-1)
        # Finished rows keep being fed padding until the batch ends; clamping keeps their (unused) positions
        # inside the model's position table when other rows run longer.
        position = (position + 1).clamp(max=last_position)
        logits = model(input_ids=token[:, None], attention_mask=mask, position_ids=position[:, None],
                       past_key_values=cache, use_cache=True).logits[:, -1].float()

    stops = set(eos_token_ids)
    return [_until_eos(tokens[:row.max_new_tokens], stops) for tokens, row in zip(generated.tolist(), rows)]


def _until_eos(tokens: list[int], stops: set[int]) -> list[int]:
    for i, token in enumerate(tokens):
        if token in stops:
            return tokens[: i + 1]
    return tokens
