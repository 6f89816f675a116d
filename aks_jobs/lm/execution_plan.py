"""How a recipe runs on this hardware, without changing its math.

The recipe fixes the batch the optimizer sees (batch_size x grad_accum per device). How that batch is
cut into micro-batches, whether the model is compiled, and whether its vocabulary is padded are
choices of speed only:

- Micro-batch on GPU: the largest divisor of the recipe's batch that fits the GPU's memory, so it runs
  one 32-block micro-batch instead of the notebook's 4 blocks x 8 accumulation steps (same gradient,
  far fewer small kernels). A CPU keeps the recipe's split (why: docs/performance.md#training).
- Vocabulary padded to a multiple of 64 while training (GPT-2's 50257 -> 50304): tensor-core friendly
  matrix shapes for the largest matmul in the model. The padded rows are never targets; the saved
  model is trimmed back to the tokenizer's size, so what is served is shaped like the base.
- torch.compile only when the run is long enough to repay the compilation (see COMPILE_MIN_TOKENS).
- The head and its cross-entropy run fused in chunks (fused_loss.py, always on): no [tokens, vocabulary]
  logits are held, which is most of what a micro-batch would add beyond its activations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from transformers import PreTrainedModel

from aks_jobs.lm.fused_loss import WORKSPACE_BYTES as LOSS_WORKSPACE_BYTES

CompileMode = Literal["auto", "on", "off"]
COMPILE_MODES: tuple[CompileMode, ...] = ("auto", "on", "off")
VOCAB_MULTIPLE = 64
# Compiling costs about a minute; it pays off only for long runs (break-even: docs/performance.md#training).
COMPILE_MIN_TOKENS = 15_000_000
# Share of GPU memory a plan may fill: the rest is the allocator's slack and the CUDA context.
GPU_MEMORY_SHARE = 0.85
# Weights, gradients and AdamW's two moments, all float32, and the fused loss's float32 head gradient.
BYTES_PER_PARAMETER = 20
# Bytes per token and layer per n_embd that Hugging Face's GPT-2 keeps for backward under bf16 autocast
# (measured; how, and the textbook figure it replaced: docs/performance.md#training).
ACTIVATION_BYTES_PER_EMBD = 70


@dataclass(frozen=True)
class ExecutionPlan:
    micro_batch: int  # blocks per forward/backward on each device
    grad_accum: int  # micro-batches per optimizer step: micro_batch x grad_accum = the recipe's batch
    compile: bool
    optimizer: str  # TrainingArguments.optim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def largest_divisor_at_most(number: int, limit: int) -> int:
    """The largest divisor of `number` that is <= `limit` (at least 1)."""
    return max(d for d in range(1, max(1, min(number, limit)) + 1) if number % d == 0)


def bytes_per_block(config: Any, block_size: int) -> int:
    """GPU training memory one block of `block_size` tokens needs, for a GPT-2-shaped config: the activations
    kept for backward (ACTIVATION_BYTES_PER_EMBD) plus a 20% margin. No logits: the loss is fused (fused_loss.py)."""
    return int(1.2 * block_size * config.n_layer * ACTIVATION_BYTES_PER_EMBD * config.n_embd)


def gpu_memory() -> int:
    return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory


def choose_micro_batch(batch: int, per_block: int, budget: int, parameters: int) -> int:
    room = budget - BYTES_PER_PARAMETER * parameters - LOSS_WORKSPACE_BYTES
    return largest_divisor_at_most(batch, room // per_block if room > 0 else 1)


def should_compile(mode: CompileMode, train_tokens: float, on_gpu: bool) -> bool:
    """auto: only on GPU (inductor's CPU code is slower to build and gains little) and only for long runs."""
    if mode == "auto":
        return on_gpu and train_tokens >= COMPILE_MIN_TOKENS
    return mode == "on"


def plan_execution(
    model: PreTrainedModel,
    block_size: int,
    batch_size: int,
    grad_accum: int,
    micro_batch: int | None,
    compile_mode: CompileMode,
    train_tokens: float,
) -> ExecutionPlan:
    """The recipe's batch is batch_size x grad_accum blocks per device and step; `micro_batch` None = auto."""
    on_gpu = torch.cuda.is_available()
    batch = batch_size * grad_accum
    if micro_batch is None:
        micro_batch = batch_size
        if on_gpu:
            micro_batch = choose_micro_batch(
                batch,
                bytes_per_block(model.config, block_size),
                int(gpu_memory() * GPU_MEMORY_SHARE),
                model.num_parameters(),
            )
    elif batch % micro_batch:
        raise ValueError(
            f"--micro-batch {micro_batch} must divide --batch-size x --grad-accum ({batch}), so the "
            f"optimizer still sees the recipe's batch"
        )
    return ExecutionPlan(
        micro_batch=micro_batch,
        grad_accum=batch // micro_batch,
        compile=should_compile(compile_mode, train_tokens, on_gpu),
        optimizer="adamw_torch_fused",
    )  # one kernel for all parameters; CPU and CUDA


def pad_vocabulary(model: PreTrainedModel, multiple: int = VOCAB_MULTIPLE) -> int:
    """Pad the (tied) embeddings to a multiple of `multiple` rows; return the size to trim back to."""
    size = model.get_input_embeddings().num_embeddings
    if size % multiple:
        model.resize_token_embeddings(size, pad_to_multiple_of=multiple)
    return size


def trim_vocabulary(model: PreTrainedModel, size: int) -> None:
    if model.get_input_embeddings().num_embeddings != size:
        model.resize_token_embeddings(size)
