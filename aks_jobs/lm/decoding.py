"""Batched autoregressive decoding where every row brings its own settings (nanoGPT-style, readable in one sitting).

Continuous batching: each row is prefilled into its own slot of a static KV cache (lm.kv_forward) when it
joins, then one forward per step advances every running row by a token; a row leaves when done. Each
row is processed like Hugging Face's generate() with that row's settings alone: repetition penalty, then (when
sampling) temperature, top-k and top-p, then argmax or a draw. Draws use the row's own uniform numbers by
inverse CDF, so a sampled row depends only on its prompt, settings and numbers, never on its batch
neighbours or the step it joined at. (The logits themselves may still differ in the last bits with the batch's
shape, so in bf16 a near-tie can flip a token; in float32 that is vanishingly rare.)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from aks_jobs.lm.kv_forward import CachedForward, Gpt2CachedForward


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
        self.candidates = max((k for k, s in zip(top_k, sampling, strict=True) if s), default=1)
        # Every sampling row's draws, one row each, on the device: a step picks them by the rows' token counts
        # there, with no per-row work or host-to-device copy per step.
        width = max((row.max_new_tokens for row in rows if row.do_sample), default=1)
        uniforms = torch.zeros((len(rows), width), dtype=torch.float32)
        for index, row in enumerate(rows):
            if row.do_sample and row.uniforms is not None:  # None: a settings-only check, never stepped
                draws = row.uniforms[:width]
                uniforms[index, : len(draws)] = draws
        self.uniforms = uniforms.to(device)

    def draws(self, generated: torch.Tensor) -> torch.Tensor:
        """Each row's uniform number for its next token, given its count of tokens so far [rows]."""
        return self.uniforms.gather(1, generated[:, None].clamp(max=self.uniforms.shape[1] - 1))[:, 0]


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


def next_tokens(logits: torch.Tensor, seen: torch.Tensor, settings: Settings, generated: torch.Tensor) -> torch.Tensor:
    """Every row's next token; `generated` [rows] counts the tokens each row has made so far."""
    scores = penalize(logits, seen, settings.penalty) if settings.any_penalty else logits
    greedy = scores.argmax(-1)
    if not settings.any_sample:
        return greedy
    values, ids = warp(scores, settings)
    return torch.where(settings.do_sample, draw(values, ids, settings.draws(generated)), greedy)


class ContinuousDecoder:
    """Rows join between steps (prefilled into a free cache slot) and leave when done; each step() advances
    every running row by one token. Not thread-safe: one thread owns it (lm.batcher.Engine)."""

    def __init__(self, forward: CachedForward, eos_token_ids: Collection[int]) -> None:
        self.forward = forward
        self.eos = frozenset(eos_token_ids)
        slots, vocab, device = forward.slots, forward.vocab_size, forward.device
        self.rows: list[Row | None] = [None] * slots
        self.generated = [0] * slots  # new tokens so far, per slot
        # The same counts, and the position of the last token fed, on the device: a step updates them there
        # instead of copying per-row lists over (each such copy waits for the device).
        self._generated = torch.zeros(slots, dtype=torch.long, device=device)
        self._positions = torch.full((slots,), _IDLE_POSITION, dtype=torch.long, device=device)
        self.logits = torch.zeros((slots, vocab), dtype=torch.float32, device=device)
        self.seen = torch.zeros((slots, vocab), dtype=torch.bool, device=device)
        self._settings: Settings | None = None  # for rows[:_settings_for]; rebuilt when rows join or leave
        self._settings_for = 0

    @property
    def free_slots(self) -> int:
        return self.rows.count(None)

    @property
    def running(self) -> bool:
        return any(row is not None for row in self.rows)

    def add(self, rows: Sequence[Row]) -> list[int]:
        """Prefill `rows` into the lowest free slots (a prompt repeated in `rows` is run once); return the slots.

        Prompts are prefilled together, a few forwards at most (see prefill_groups). Every prompt plus its
        max_new_tokens must fit the model's context (the caller checks)."""
        free = [slot for slot, row in enumerate(self.rows) if row is None]
        if len(rows) > len(free):
            raise ValueError(f"{len(rows)} rows do not fit the {len(free)} free slots")
        slots = free[: len(rows)]
        first: dict[tuple[int, ...], int] = {}  # prompt -> the slot that runs it
        for slot, row in zip(slots, rows, strict=True):
            first.setdefault(tuple(row.prompt), slot)
        try:
            for group in prefill_groups(list(first.items())):
                prompts = [torch.tensor(prompt, dtype=torch.long) for prompt, _ in group]
                group_slots = [slot for _, slot in group]
                self.logits[group_slots] = self.forward.prefill(group_slots, prompts)
            for slot, row in zip(slots, rows, strict=True):
                key = tuple(row.prompt)
                if first[key] != slot:
                    self.forward.copy_slot(first[key], slot, len(key))
                    self.logits[slot] = self.logits[first[key]]
                self.seen[slot] = False
                self.seen[slot, torch.tensor(row.prompt, device=self.seen.device)] = True
                self.rows[slot], self.generated[slot] = row, 0
                self._generated[slot], self._positions[slot] = 0, len(row.prompt) - 1
        except Exception:
            for slot in slots:  # all or nothing: a failed prefill leaves no half-added rows running
                self.rows[slot] = None
                self._positions[slot] = _IDLE_POSITION
            raise
        finally:
            self._settings = None
        return slots

    def remove(self, slot: int) -> None:
        self.rows[slot] = None
        self._positions[slot] = _IDLE_POSITION
        self._settings = None

    def step(self) -> list[tuple[int, int, bool]]:
        """Choose every running row's next token; feed the rows that go on. Returns (slot, token, finished)."""
        active = [slot for slot, row in enumerate(self.rows) if row is not None]
        if not active:
            return []
        high = active[-1] + 1
        rows = self.rows[:high]
        if self._settings is None or self._settings_for != high:
            self._settings = Settings([row or _IDLE for row in rows], self.forward.vocab_size, self.forward.device)
            self._settings_for = high
        tokens = next_tokens(self.logits[:high], self.seen[:high], self._settings, self._generated[:high])
        self._generated[:high] += 1  # idle slots' counts are unused
        self.seen[torch.arange(high, device=tokens.device), tokens] = True
        chosen = tokens.tolist()
        out = []
        for slot in active:
            row, token = self.rows[slot], chosen[slot]
            self.generated[slot] += 1
            finished = token in self.eos or self.generated[slot] >= row.max_new_tokens
            out.append((slot, token, finished))
            if finished:
                self.remove(slot)
        going_on = [slot for slot in active if self.rows[slot] is not None]
        if going_on:
            high = going_on[-1] + 1
            # Idle slots below `high` are fed their stale token at position 0 of their own (unused) cache rows.
            positions = self._positions[:high].add_(1).clamp(min=0)
            self.logits[:high] = self.forward.step(tokens[:high], positions)
        return out


def prefill_groups(prompts: list[tuple[tuple[int, ...], int]]) -> list[list[tuple[tuple[int, ...], int]]]:
    """(prompt, slot) pairs in groups of one forward each: prompts of similar length together, at most
    PREFILL_TOKENS positions per forward counting the padding (one longer prompt goes alone)."""
    groups: list[list[tuple[tuple[int, ...], int]]] = []
    for pair in sorted(prompts, key=lambda pair: len(pair[0])):
        # Sorted by length, so this prompt is the longest of its group: the padded size is its length x count.
        if groups and len(pair[0]) * (len(groups[-1]) + 1) <= PREFILL_TOKENS:
            groups[-1].append(pair)
        else:
            groups.append([pair])
    return groups


# One forward of many short prompts costs about what one prompt does on a CPU (the weights are read once);
# the bound keeps a prefill's activations small (4096 x 3072 floats in the MLP: 48 MiB).
PREFILL_TOKENS = 4096
_IDLE = Row(prompt=[0], max_new_tokens=1)  # neutral greedy settings for an empty slot
_IDLE_POSITION = -(2**62)  # an empty slot's position: stays below 0 (fed as 0) however many steps pass


def decode(
    model: PreTrainedModel, rows: Sequence[Row], *, eos_token_ids: Collection[int], forward: CachedForward | None = None
) -> list[list[int]]:
    """The new tokens of every row, decoded together: up to and including its first EOS, at most its
    max_new_tokens. Every prompt plus its max_new_tokens must fit the model's context (the caller checks).
    `forward` runs the model (a cache of at least len(rows) slots); by default an eager Gpt2CachedForward."""
    decoder = ContinuousDecoder(forward or Gpt2CachedForward(model, len(rows)), eos_token_ids)
    decoder.add(rows)
    new_tokens: list[list[int]] = [[] for _ in rows]
    while decoder.running:
        for slot, token, _ in decoder.step():
            new_tokens[slot].append(token)
    return new_tokens
