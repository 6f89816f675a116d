"""Argument types shared by the step scripts' command lines."""
from __future__ import annotations

import argparse
from collections.abc import Callable


def bounded(kind: type[int] | type[float], *, at_least: float | None = None, above: float | None = None,
            below: float | None = None) -> Callable[[str], int | float]:
    """An argparse type: `kind(value)` within the bounds, else an error saying which bound."""
    def parse(value: str) -> int | float:
        number = kind(value)
        if at_least is not None and number < at_least:
            raise argparse.ArgumentTypeError(f"must be at least {at_least:g}, got {value}")
        if above is not None and number <= above:
            raise argparse.ArgumentTypeError(
                f"must be {'positive' if above == 0 else f'above {above:g}'}, got {value}")
        if below is not None and number >= below:
            raise argparse.ArgumentTypeError(f"must be below {below:g}, got {value}")
        return number

    parse.__name__ = kind.__name__  # argparse names the type in "invalid float value: 'x'"
    return parse
