"""The hyperparameter sweep, defined once: the search space and the Bandit early-termination rule.

Azure ML runs it as a sweep node (function_app/backends/aml_pipeline.py turns both into azure-ai-ml's
search space and BanditPolicy); locally train.py --sweep-trials runs the trials one after another and
applies `BanditRule` itself. Plain Python (pydantic only), so the control plane imports it without torch.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aks_jobs.lm.presets import PRETRAINED

# The metric every trial logs once per epoch (train.py) and the sweep minimises: loss on the dev blocks.
PRIMARY_METRIC = "dev_loss"
GOAL = "minimize"
# The train component's inputs the sweep sets per trial (Hyperparameters fields of the same names).
SWEPT = ("learning_rate", "epochs", "warmup_ratio", "weight_decay")
# Presets whose trials evaluate (and so log PRIMARY_METRIC) every epoch: those with best_epoch on.
PRESETS_EVALUATING_EVERY_EPOCH = tuple(name for name, values in PRETRAINED.items() if values["best_epoch"])


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SearchSpace(_Frozen):
    """Bounds of each swept setting: learning rate log-uniform, epochs a whole number in a range,
    warmup (share of the steps) and weight decay uniform. The defaults bracket the notebook's recipe."""

    learning_rate_min: float = Field(1e-5, gt=0)
    learning_rate_max: float = Field(5e-4, gt=0)
    epochs_min: int = Field(1, ge=1)
    epochs_max: int = Field(4, ge=1)
    warmup_ratio_min: float = Field(0.0, ge=0, lt=1)
    warmup_ratio_max: float = Field(0.1, ge=0, lt=1)
    weight_decay_min: float = Field(0.0, ge=0)
    weight_decay_max: float = Field(0.1, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        for name in SWEPT:
            low, high = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
            if low > high:
                raise ValueError(f"{name}_min ({low:g}) is above {name}_max ({high:g}); swap them")
        return self

    def epoch_choices(self) -> list[int]:
        return list(range(self.epochs_min, self.epochs_max + 1))

    def sample(self, rng: random.Random) -> dict[str, float | int]:
        """One trial's settings, drawn at random (the sweep's "random" sampling)."""
        log_lr = rng.uniform(math.log(self.learning_rate_min), math.log(self.learning_rate_max))
        return {
            "learning_rate": math.exp(log_lr),
            "epochs": rng.choice(self.epoch_choices()),
            "warmup_ratio": rng.uniform(self.warmup_ratio_min, self.warmup_ratio_max),
            "weight_decay": rng.uniform(self.weight_decay_min, self.weight_decay_max),
        }


class BanditRule(_Frozen):
    """Azure ML's Bandit policy for a metric to minimise. Each logged value of the primary metric is one
    interval (1, 2, ...); the rule is applied at every multiple of evaluation_interval that is at least
    delay_evaluation, and stops a trial whose value there is worse than the best any trial reported at that
    interval by more than the slack: value > best * (1 + slack_factor), or value > best + slack_amount."""

    slack_factor: float = Field(0.1, ge=0)
    slack_amount: float = Field(0.0, ge=0)
    evaluation_interval: int = Field(1, ge=1)
    delay_evaluation: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _one_slack(self) -> Self:
        if (self.slack_factor > 0) == (self.slack_amount > 0):
            raise ValueError("set exactly one of slack_factor and slack_amount above 0 (the other 0)")
        return self

    def applies_at(self, interval: int) -> bool:
        return interval >= self.delay_evaluation and interval % self.evaluation_interval == 0

    def allowed(self, best: float) -> float:
        """The worst value a trial may report at an interval where the best so far is `best`."""
        return best * (1 + self.slack_factor) if self.slack_factor else best + self.slack_amount

    def should_stop(self, interval: int, value: float, best: float | None) -> bool:
        """A non-finite loss (diverged) is worse than anything; without a best yet nothing is compared."""
        if not self.applies_at(interval):
            return False
        if not math.isfinite(value):
            return True
        return best is not None and value > self.allowed(best)


class BestByInterval:
    """The best value any trial so far reported at each interval: what BanditRule compares with."""

    def __init__(self) -> None:
        self.best: dict[int, float] = {}

    def report(self, interval: int, value: float) -> None:
        if math.isfinite(value) and value < self.best.get(interval, math.inf):
            self.best[interval] = value


class SweepLimits(_Frozen):
    """How many trials, how many at once (Azure only; locally they run one after another) and the whole
    sweep's time limit in seconds (0: none)."""

    max_total_trials: int = Field(ge=1)
    max_concurrent_trials: int = Field(2, ge=1)
    timeout_s: int = Field(0, ge=0)


class SweepClock:
    """The whole sweep's time limit (SweepLimits.timeout_s; 0: none), the rule Azure ML applies to its sweep
    node's `timeout` and the local sweep applies itself: once the limit has passed no trial starts, and a
    trial still running is stopped; the trials that finished before it are what the choice is made from."""

    def __init__(self, timeout_s: int, now: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s, self.now = timeout_s, now
        self.started = now()

    def expired(self) -> bool:
        return bool(self.timeout_s) and self.now() - self.started >= self.timeout_s


class Sweep(_Frozen):
    """Everything a sweep of the train step needs, as the settings give it to either backend."""

    space: SearchSpace = SearchSpace()
    rule: BanditRule = BanditRule()
    limits: SweepLimits

    def component_inputs(self) -> dict[str, int | str]:
        """The train component's sweep_* inputs, for a backend that runs the trials in train.py (local)."""
        return {
            "sweep_trials": self.limits.max_total_trials,
            "sweep_space": self.space.model_dump_json(),
            "sweep_rule": self.rule.model_dump_json(),
            "sweep_timeout_s": self.limits.timeout_s,
        }
