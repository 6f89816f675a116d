"""A run's training choices (POST /api/retrain's body): checked, filled in from the app settings, and
turned into the settings the backends submit the run's pipeline with."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from aks_jobs.lm.presets import OFFLINE_KIND, PRESETS, preset_values
from function_app.settings import Settings, SettingsError
from pipeline_contracts.api_requests import ALLOWED, TrainChoices
from pipeline_contracts.api_responses import PresetValues, RetrainDefaults

# TrainChoices field -> the Settings field it overrides for one run.
_SETTING = {
    "preset": "train_preset",
    "epochs": "train_epochs",
    "learning_rate": "train_learning_rate",
    "base_model": "base_model",
    "sweep_trials": "sweep_trials",
}


class BadChoices(ValueError):
    """The body names a field, its value and what is allowed."""


def parse(body: Any) -> TrainChoices:
    """The request body (None or {} = the app settings) as TrainChoices; BadChoices naming the field."""
    try:
        return TrainChoices.model_validate(body or {})
    except ValidationError as err:
        error = err.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        if error["type"] == "model_type":
            raise BadChoices(f"send a JSON object with any of {', '.join(ALLOWED)}, or {{}}, not {body!r}") from None
        if not field:  # a check across fields: its message names them
            raise BadChoices(error["msg"].removeprefix("Value error, ")) from None
        allowed = ALLOWED.get(field, f"only {', '.join(ALLOWED)}")
        raise BadChoices(f"{field}={error.get('input')!r} is refused ({error['msg']}); allowed: {allowed}") from None


def resolve(settings: Settings, choices: TrainChoices | None) -> TrainChoices:
    """What the run uses: the choices given, the app settings for the rest; BadChoices if they cannot go
    together (e.g. a sweep with the preset the settings name)."""
    given = choices.model_dump(exclude_none=True) if choices else {}
    filled = {name: given.get(name, getattr(settings, setting)) for name, setting in _SETTING.items()}
    try:
        run_settings(settings, TrainChoices.model_construct(**filled))
    except SettingsError as err:
        raise BadChoices(str(err)) from None
    return TrainChoices.model_validate(filled)


def run_settings(settings: Settings, choices: TrainChoices | None) -> Settings:
    """The settings one run's pipeline is built from: the app's, with the run's choices in place."""
    if choices is None:
        return settings
    given = {_SETTING[name]: value for name, value in choices.model_dump(exclude_none=True).items()}
    try:
        return Settings.model_validate({**settings.model_dump(), **given})
    except ValidationError as err:
        raise SettingsError(err.errors()[0]["msg"].removeprefix("Value error, ")) from None


def defaults(settings: Settings) -> RetrainDefaults:
    """What the next run trains with when a retrain sets nothing: the app settings, and where epochs or the
    learning rate are unset there, the preset's own for the base model's kind (a named base other than
    `offline` is a pretrained one)."""
    kind = OFFLINE_KIND if settings.base_model == OFFLINE_KIND else "pretrained"
    presets = {
        preset: PresetValues(
            epochs=settings.train_epochs or values["epochs"],
            learning_rate=settings.train_learning_rate or values["learning_rate"],
        )
        for preset, values in ((p, preset_values(p, kind)) for p in PRESETS)
    }
    chosen = presets[settings.train_preset]
    return RetrainDefaults(
        preset=settings.train_preset,
        base_model=settings.base_model,
        sweep_trials=settings.sweep_trials,
        epochs=chosen.epochs,
        learning_rate=chosen.learning_rate,
        presets=presets,
    )
