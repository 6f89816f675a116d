"""GPT-2's forward pass over a static, preallocated KV cache with one slot per running sequence.

Continuous batching needs each row of the batch at its own position: a row joins at any step (its prompt is
prefilled into its slot) and leaves when done (its slot is reused). Keys and values live in fixed buffers
[slots, heads, context, head_dim] per layer, written in place, never concatenated, so memory is fixed at start
and a decode step has static shapes (what a CUDA graph needs later).

This is the seam for other ways of running the model (int8 weights, another runtime): anything with the
`CachedForward` methods below can be handed to lm.decoding.ContinuousDecoder. `Gpt2CachedForward` calls the
model's own modules (c_attn, c_proj, mlp, layer norms), so modules swapped in place (e.g. quantized linear
layers) are used as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel


class CachedForward(Protocol):
    slots: int  # rows the cache holds
    context: int  # positions per row
    vocab_size: int
    device: torch.device

    def prefill(self, slots: Sequence[int], prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fill each slot with its prompt's keys and values (positions 0..len-1), all in one forward; return
        each prompt's last-position logits [len(prompts), vocab] in float32."""

    def copy_slot(self, source: int, target: int, length: int) -> None:
        """Give `target` the first `length` cached positions of `source` (several sequences of one prompt)."""

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Feed tokens[i] at positions[i] to slot i for slots 0..len(tokens)-1; return their logits [n, vocab]
        in float32. Slots that are idle get any token and position; their answers are ignored."""


class Gpt2CachedForward:
    """CachedForward for Hugging Face GPT2LMHeadModel (eval mode, no dropout)."""

    def __init__(self, model: PreTrainedModel, slots: int) -> None:
        config = model.config
        if config.model_type != "gpt2" or config.scale_attn_by_inverse_layer_idx or config.reorder_and_upcast_attn:
            raise ValueError(f"Gpt2CachedForward runs plain GPT-2 only, not {config.model_type} with these options")
        self.model, self.slots = model, slots
        self.context, self.vocab_size = config.n_positions, config.vocab_size
        self.device = model.device
        self.heads = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.scale = self.head_dim**-0.5 if config.scale_attn_weights else 1.0
        dtype = next(model.parameters()).dtype
        shape = (slots, self.heads, self.context, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(config.n_layer)]

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [n, t, embd] -> [n, heads, t, head_dim]
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def _run(self, tokens: torch.Tensor, positions: torch.Tensor, attend, last: torch.Tensor | None = None):
        """Logits [n, vocab] at each row's position `last` (default: the final one)."""
        gpt = self.model.transformer
        hidden = gpt.wte(tokens) + gpt.wpe(positions)
        for layer, block in enumerate(gpt.h):
            query, key, value = block.attn.c_attn(block.ln_1(hidden)).split(self.model.config.n_embd, dim=-1)
            attended = attend(layer, self._heads(query), self._heads(key), self._heads(value))
            hidden = hidden + block.attn.c_proj(attended.transpose(1, 2).reshape(hidden.shape))
            hidden = hidden + block.mlp(block.ln_2(hidden))
        final = hidden[:, -1] if last is None else hidden[torch.arange(hidden.shape[0], device=self.device), last]
        return self.model.lm_head(gpt.ln_f(final)).float()

    @torch.inference_mode()
    def prefill(self, slots: Sequence[int], prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        # Prompts of different lengths go in one forward, padded on the right: under the causal mask a real
        # token never sees the padding after it, and the padding's cache entries (beyond a row's length) are
        # overwritten by that row's own decode steps before its attention window reaches them.
        lengths = torch.tensor([len(prompt) for prompt in prompts], device=self.device)
        padded = torch.nn.utils.rnn.pad_sequence([prompt.to(self.device) for prompt in prompts], batch_first=True)
        width = padded.shape[1]
        slot_index = torch.tensor(slots, device=self.device)

        def attend(layer, query, key, value):
            self.keys[layer][slot_index, :, :width] = key
            self.values[layer][slot_index, :, :width] = value
            return F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=self.scale)

        positions = torch.arange(width, device=self.device).expand(len(prompts), width)
        return self._run(padded, positions, attend, last=lengths - 1)

    @torch.inference_mode()
    def copy_slot(self, source: int, target: int, length: int) -> None:
        for cache in (*self.keys, *self.values):
            cache[target, :, :length] = cache[source, :, :length]

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # Attention reads only the positions any row has reached; each row sees its own first `position + 1`.
        return self._step(tokens, positions, int(positions.max()) + 1)

    @torch.inference_mode()
    def step_static(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """step() attending over the whole context (later positions masked): no host sync and shapes that
        depend on the number of rows only, as a CUDA graph needs (lm.graphed_forward)."""
        return self._step(tokens, positions, self.context)

    def _step(self, tokens: torch.Tensor, positions: torch.Tensor, window: int) -> torch.Tensor:
        rows = tokens.shape[0]
        visible = (torch.arange(window, device=self.device)[None] <= positions[:, None])[:, None, None]
        row_index = torch.arange(rows, device=self.device)

        def attend(layer, query, key, value):
            keys, values = self.keys[layer], self.values[layer]
            keys[row_index, :, positions] = key[:, :, 0]
            values[row_index, :, positions] = value[:, :, 0]
            return F.scaled_dot_product_attention(
                query, keys[:rows, :, :window], values[:rows, :, :window], attn_mask=visible, scale=self.scale
            )

        return self._run(tokens[:, None], positions[:, None], attend)
