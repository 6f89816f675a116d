"""Training presets (their values: presets.py) and the TrainingArguments they become.

`default` is the design notebook's fine-tuning recipe; `memorize` its "sledgehammer" for tiny corpora
(one fact must come back word for word). Each preset has values for a pretrained base and for the
offline base (random init, see base_model.py), which needs other settings to learn at all. Any value
given on the command line wins over the preset.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments
from transformers.utils import is_torch_tf32_available

from aks_jobs.lm.execution_plan import CompileMode, ExecutionPlan
from aks_jobs.lm.presets import COMMON, FROM_SCRATCH, PRESETS, PRETRAINED, preset_values

MAX_BLOCK_SIZE = 1024  # GPT-2's context; the notebook's block size


@dataclass(frozen=True)
class Hyperparameters:
    epochs: float
    learning_rate: float
    weight_decay: float
    warmup_ratio: float  # share of the optimizer steps spent warming the learning rate up from 0
    batch_size: int  # per device
    grad_accum: int
    eval_fraction: float
    seed: int
    max_steps: int | None  # stops training early when set
    max_wall_s: float | None  # stops training after this many seconds of it when set
    block_size: int | None  # None: min(1024, the model's context)
    best_epoch: bool  # evaluate and checkpoint every epoch, end with the best (notebook); else no checkpoints
    line_blocks: bool  # overlapping training blocks starting at every line (see blocks.line_blocks)
    micro_batch: int | None  # blocks per forward pass; None: the largest that fits (execution_plan.py)
    compile: CompileMode  # torch.compile: auto = on GPU for long runs only
    response_only_loss: bool  # instruction examples: loss on response tokens only (blocks.response_tokens)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hyperparameters(preset: str, base_kind: str, overrides: dict[str, Any]) -> Hyperparameters:
    """The preset's values for this kind of base, then every override that is not None."""
    if preset not in PRETRAINED:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = preset_values(preset, base_kind)
    values.update({key: value for key, value in overrides.items() if value is not None})
    return Hyperparameters(**values)


def preset_help(key: str) -> str:
    """Each preset's value of one setting, for --help: "default 3, memorize 20 (offline: ...)"."""

    def shown(value: Any) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    parts = []
    for preset in PRESETS:
        part = f"{preset} {shown(PRETRAINED[preset].get(key, COMMON.get(key)))}"
        if key in FROM_SCRATCH[preset]:
            part += f" (offline base: {shown(FROM_SCRATCH[preset][key])})"
        parts.append(part)
    return "preset values: " + ", ".join(parts)


def choose_block_size(hp: Hyperparameters, context: int) -> int:
    if hp.block_size is None:
        return min(MAX_BLOCK_SIZE, context)
    if not 2 <= hp.block_size <= context:
        raise ValueError(f"--block-size {hp.block_size}: must be between 2 and the model's context ({context})")
    return hp.block_size


def precision() -> str:
    """bf16 where the GPU has it, else fp16 on GPU; fp32 on CPU."""
    if not torch.cuda.is_available():
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def optimizer_steps(hp: Hyperparameters, train_blocks: int, world_size: int) -> int:
    if hp.max_steps:
        return hp.max_steps
    batches = math.ceil(train_blocks / (hp.batch_size * world_size))
    return max(1, math.ceil(math.ceil(batches / hp.grad_accum) * hp.epochs))


def training_arguments(
    hp: Hyperparameters, plan: ExecutionPlan, checkpoint_dir: Path, train_blocks: int, world_size: int
) -> TrainingArguments:
    on_gpu = torch.cuda.is_available()
    mixed = precision()
    steps = optimizer_steps(hp, train_blocks, world_size)
    per_epoch = "epoch" if hp.best_epoch else "no"
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        num_train_epochs=hp.epochs,
        max_steps=hp.max_steps or -1,
        learning_rate=hp.learning_rate,
        weight_decay=hp.weight_decay,
        warmup_steps=hp.warmup_ratio,  # below 1: a share of the steps (transformers' TrainingArguments)
        per_device_train_batch_size=plan.micro_batch,
        per_device_eval_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.grad_accum,
        optim=plan.optimizer,
        torch_compile=plan.compile,
        seed=hp.seed,
        eval_strategy=per_epoch,
        save_strategy=per_epoch,
        load_best_model_at_end=hp.best_epoch,
        save_total_limit=1 if hp.best_epoch else None,  # the best and the latest are kept
        save_only_model=True,  # checkpoints only pick the best epoch; training never resumes from them
        # ~20 points on the loss curve for any run length, every step for tiny runs.
        logging_strategy="steps",
        logging_steps=max(1, min(100, steps // 20)),
        logging_first_step=True,
        bf16=mixed == "bf16",
        fp16=mixed == "fp16",
        tf32=True if on_gpu and is_torch_tf32_available() else None,
        # Without use_cpu a CPU-only torchrun gets no process group from accelerate (it only picks gloo
        # for cpu=True) and every rank would train alone on all the data.
        use_cpu=not on_gpu,
        ddp_find_unused_parameters=False,
        include_num_input_tokens_seen="non_padding",
        report_to="none",  # metrics go to MLflow through tracking.StepMetrics
        dataloader_num_workers=0,
    )


def effective_batch(hp: Hyperparameters, world_size: int) -> int:
    return hp.batch_size * hp.grad_accum * world_size
