"""Training limits that end a run early with the reason recorded: optimizer steps and wall time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


def any_rank(flag: bool, device: torch.device | str | None = None) -> bool:
    """True on every DDP rank when it is true on any (an all-reduce MAX of one flag; the flag itself without
    DDP): ranks that decided apart would leave one waiting in the next collective."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    if device is None:
        device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    tensor = torch.tensor([float(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


class WallClockLimit(TrainerCallback):
    """Stop training after `limit_s` seconds of it (checked after each optimizer step).

    Under DDP the ranks stop at the same step: the slowest rank's clock decides (an all-reduce MAX of
    one flag), since a rank that stopped alone would leave the others waiting in their next all-reduce.
    """

    def __init__(self, limit_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self.limit_s, self.now = limit_s, now
        self.started = now()
        self.stopped_at_step: int | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.started = self.now()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        over = any_rank(self.now() - self.started >= self.limit_s, args.device if args else None)
        if over and self.stopped_at_step is None:
            self.stopped_at_step = state.global_step
            control.should_training_stop = True


def stop_reason(max_steps: int | None, planned_steps: int, steps: int, wall: WallClockLimit | None) -> str | None:
    """Why training ended before its planned steps, naming the limit and how to change it; None if it did not."""
    if wall is not None and wall.stopped_at_step is not None:
        return (
            f"stopped at the wall-time limit of {wall.limit_s:g} s after {steps} optimizer steps (--max-wall-s, "
            "app setting TRAIN_MAX_WALL_S); the model is what those steps learned. Raise the limit to train "
            "longer."
        )
    if max_steps and steps >= max_steps and max_steps < planned_steps:
        return (
            f"stopped at the limit of {max_steps} optimizer steps of {planned_steps} planned (--max-steps, app "
            "setting TRAIN_MAX_STEPS); raise it to train on every epoch."
        )
    return None
