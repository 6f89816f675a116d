"""Argument types shared by the step scripts' command lines."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def bounded(
    kind: type[int] | type[float],
    *,
    at_least: float | None = None,
    above: float | None = None,
    below: float | None = None,
) -> Callable[[str], int | float]:
    """An argparse type: `kind(value)` within the bounds, else an error saying which bound."""

    def parse(value: str) -> int | float:
        number = kind(value)
        if at_least is not None and number < at_least:
            raise argparse.ArgumentTypeError(f"must be at least {at_least:g}, got {value}")
        if above is not None and number <= above:
            raise argparse.ArgumentTypeError(f"must be {'positive' if above == 0 else f'above {above:g}'}, got {value}")
        if below is not None and number >= below:
            raise argparse.ArgumentTypeError(f"must be below {below:g}, got {value}")
        return number

    parse.__name__ = kind.__name__  # argparse names the type in "invalid float value: 'x'"
    return parse


def json_model(model: type[M]) -> Callable[[str], M]:
    """An argparse type: a JSON object validated by `model`, else an error naming each bad field."""

    def parse(value: str) -> M:
        try:
            return model.model_validate_json(value)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in error.errors())
            raise argparse.ArgumentTypeError(f"{problems} (got {value})") from None

    parse.__name__ = model.__name__
    return parse
