"""How every component reads its app settings: pydantic-settings over the environment (or a mapping given
to `from_env`), one error that names the setting and what to set.

Shared by the control plane (function_app/settings.py) and the web UI (ui/settings.py), which ship apart but
read the same app settings (DataStorage, DATA_CONTAINER, ...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Self

from pydantic import AliasGenerator, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict


class SettingsError(ValueError):
    """A setting has a value the code cannot use; the message names it and says what to set."""


class EnvSettings(BaseSettings):
    """Settings read from an environment (os.environ, or a mapping given to `from_env`).

    A field's environment name is its alias, else its name in capitals; empty values count as unset.
    Constructing the class directly reads no environment: it is exactly what it is given.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        case_sensitive=True,
        env_ignore_empty=True,
        extra="ignore",
        validate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=str.upper),
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        **_: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        # Surrounding spaces are a copy-and-paste slip, never meant: "  " is unset, " 5 " is 5.
        values = _Environment(cls, {name: value.strip() for name, value in env.items()})()
        try:
            return cls(**values)
        except ValidationError as err:
            raise SettingsError(_explain(cls, err.errors()[0])) from None

    @classmethod
    def env_names(cls) -> list[str]:
        """Every environment variable the class reads."""
        return [field.validation_alias for field in cls.model_fields.values()]


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str]:
        return {name: value for name, value in self._env.items() if not (self.env_ignore_empty and value == "")}


_NOT_A = {
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "bool_parsing": "true or false",
}
_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def _explain(cls: type[BaseSettings], error: dict[str, Any]) -> str:
    """One validation error as a sentence naming the setting, its value and what to set."""
    if not error["loc"]:  # a check across settings: its message says it all
        return error["msg"].removeprefix("Value error, ")
    name, raw = str(error["loc"][0]), error.get("input")
    field = next((f for n, f in cls.model_fields.items() if name in (n, f.validation_alias)), None)
    example = (field.examples or [field.default])[0] if field else None
    if error["type"] in _NOT_A:
        # A field's description, when it has one, says what kind of value it takes ("a TCP port").
        what = (field.description if field else None) or _NOT_A[error["type"]]
        return f"{name}={raw!r} is not {what}; set it to e.g. {example}"
    if error["type"] in _BOUNDS:
        key, words = _BOUNDS[error["type"]]
        return f"{name}={raw!r} must be {words} {error['ctx'][key]:g}"
    return f"{name}={raw!r}: {error['msg'].removeprefix('Value error, ')}; set it to e.g. {example!r}"
