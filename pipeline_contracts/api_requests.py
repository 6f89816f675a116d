"""What the control plane's HTTP API accepts in request bodies; the UI's api_client sends the same models."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

# aks_jobs/lm/recipe.py PRESETS (a test keeps the two equal); a sweep needs one that evaluates every epoch.
Preset = Literal["default", "memorize"]
SWEEP_PRESETS = ("default",)
MAX_EPOCHS = 100
MAX_LEARNING_RATE = 0.01
MAX_SWEEP_TRIALS = 50


class TrainChoices(BaseModel):
    """A run's training choices. In POST /api/retrain an unset field keeps the app setting (TRAIN_PRESET,
    TRAIN_EPOCHS, TRAIN_LEARNING_RATE, BASE_MODEL, SWEEP_TRIALS); on a run, what it used (epochs and
    learning_rate None: the preset's own)."""

    model_config = ConfigDict(extra="forbid")

    preset: Preset | None = None
    epochs: float | None = Field(None, gt=0, le=MAX_EPOCHS)
    learning_rate: float | None = Field(None, gt=0, le=MAX_LEARNING_RATE)
    # A Hugging Face model id or a folder the job can read.
    base_model: str | None = Field(None, min_length=1, max_length=256)
    sweep_trials: int | None = Field(None, ge=0, le=MAX_SWEEP_TRIALS)

    @model_validator(mode="after")
    def _sweep_needs_per_epoch_evaluation(self) -> Self:
        if self.sweep_trials and self.preset is not None and self.preset not in SWEEP_PRESETS:
            raise ValueError(
                f"sweep_trials={self.sweep_trials} needs preset {' or '.join(SWEEP_PRESETS)} (it evaluates "
                f"every epoch), not {self.preset}; or set sweep_trials to 0"
            )
        return self


class RollbackRequest(BaseModel):
    """POST /api/rollback's body (optional): who or what asks, recorded with the rollback."""

    model_config = ConfigDict(extra="forbid")

    requested_by: str = Field("API", min_length=1, max_length=100)


ALLOWED = {
    "preset": f"one of {', '.join(Preset.__args__)}",
    "epochs": f"a number above 0 and at most {MAX_EPOCHS}",
    "learning_rate": f"a number above 0 and at most {MAX_LEARNING_RATE:g}",
    "base_model": "a Hugging Face model id or a folder the job can read (1 to 256 characters)",
    "sweep_trials": f"a whole number from 0 (no sweep) to {MAX_SWEEP_TRIALS}",
}
