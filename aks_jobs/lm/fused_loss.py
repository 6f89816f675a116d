"""The language-model head and its cross-entropy in one pass over chunks of tokens, never all the logits at once.

Hugging Face's GPT-2 computes the logits of every token ([tokens, 50257]), upcasts them to float32 and takes
the cross-entropy: for one 4 x 1024 micro-batch that is 0.8 GB of float32 logits, plus the same again for
their softmax and gradient (6.6 GB each for a 32 x 1024 one). Here each chunk of tokens gets its logits, its
loss and its gradients (for the hidden states and the head's weights) at once, and the chunk's logits are
dropped before the next one; backward only scales the stored gradients. Same math, same dtypes as the
unfused path (logits in the autocast dtype, loss in float32), far less memory.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions

IGNORE_INDEX = -100  # labels that are never targets (padding), as in Hugging Face's loss
# Float32 logits held at once: large enough for efficient matrix products, small next to the model.
CHUNK_BYTES = 256 * 2**20
WORKSPACE_BYTES = 3 * CHUNK_BYTES  # a chunk's float32 logits, their gradient and its 16-bit copy


class LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T` against `targets`; gradients computed during forward."""

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int, needs_grad: bool
    ) -> torch.Tensor:
        grad_hidden = torch.empty_like(hidden) if needs_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if needs_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            part, target = hidden[start : start + chunk], targets[start : start + chunk]
            raw = part @ weight.T  # autocast (when on) runs the product in bf16/fp16, as for the unfused head
            logits = raw.float()
            valid = target != IGNORE_INDEX
            index = target.clamp(min=0)[:, None]
            log_norm = logits.logsumexp(-1)
            total += ((log_norm - logits.gather(1, index)[:, 0]) * valid).sum()
            if not needs_grad:  # evaluation: the loss only
                continue
            # d(loss)/d(logits) = softmax - one_hot(target), zero for ignored tokens
            grad = logits.sub_(log_norm[:, None]).exp_()
            grad.scatter_add_(1, index, torch.full_like(index, -1, dtype=grad.dtype))
            grad = grad.mul_(valid[:, None]).to(raw.dtype)  # one cast for both products below
            grad_hidden[start : start + chunk] = grad @ weight
            grad_weight += grad.T @ part
        if needs_grad:
            ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_output.to(grad_hidden.dtype), grad_weight * grad_output, None, None, None


# Kept out of torch.compile's graph (the model around it still compiles): compiled on CUDA, its gradients
# never reached the weights and GPT-2 did not learn (H200, torch 2.11; docs/performance.md), while eager it does.
@torch.compiler.disable
def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed loss over the tokens of `hidden` [..., C] whose `targets` [...] are not IGNORE_INDEX."""
    chunk = max(1, CHUNK_BYTES // (4 * weight.shape[0]))
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return LinearCrossEntropy.apply(
        hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1), chunk, needs_grad
    )


def causal_lm_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Hugging Face's causal-LM loss (ForCausalLMLoss) without the logits: token t predicts label t + 1; the
    mean over the batch's targets, or the sum over `num_items_in_batch` when the Trainer accumulates."""
    targets = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    total = linear_cross_entropy(hidden, weight, targets)
    if num_items_in_batch is None:
        return total / (targets != IGNORE_INDEX).sum()
    return total / num_items_in_batch


def _forward_with_fused_loss(
    self: PreTrainedModel,
    *args: Any,
    labels: torch.Tensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    **kwargs: Any,
) -> Any:
    """The model's forward; given labels, the loss comes from causal_lm_loss and no logits are returned."""
    if labels is None:
        return type(self).forward(self, *args, **kwargs)
    outputs = self.transformer(*args, **kwargs)
    loss = causal_lm_loss(outputs.last_hidden_state, self.lm_head.weight, labels, num_items_in_batch)
    return CausalLMOutputWithCrossAttentions(loss=loss)


@contextmanager
def fused_loss(model: PreTrainedModel) -> Iterator[None]:
    """While inside, calls with labels (training and the Trainer's evaluation) use the fused loss.

    For GPT-2-shaped models (`transformer` + `lm_head`); other models keep their own loss. The model's class
    and saved form are untouched.
    """
    if not (hasattr(model, "transformer") and hasattr(model, "lm_head")):
        yield
        return

    def forward(*args: Any, **kwargs: Any) -> Any:
        return _forward_with_fused_loss(model, *args, **kwargs)

    # The Trainer reads the forward's signature to pick the batch's columns: keep the model's own.
    model.forward = functools.update_wrapper(forward, type(model).forward.__get__(model))
    try:
        yield
    finally:
        del model.forward
