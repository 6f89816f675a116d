"""A run's metrics (its train summary, as the run row keeps it) made to fit one status-table property.

A Table string property holds 32K characters; a large sweep (50 trials, many epochs, long failure messages)
beside the longest loss curve and system series does not fit, and a row that cannot be written stalls the
run. So what a person needs least goes first, until the JSON fits: trial errors shortened (the trial's
log keeps them), then the loss curve and system series thinned, then the per-epoch dev losses of the
trials; every trial's settings, dev loss, end and choice always stay. `trimmed` says what was cut.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

MAX_CHARS = 30_000  # status_store's bound for one JSON property
ERROR_CHARS = (300, 80)


def fit(metrics: dict[str, Any], max_chars: int = MAX_CHARS) -> dict[str, Any]:
    """`metrics` unchanged when its JSON fits in `max_chars`, else a copy cut down as the module says."""
    if _size(metrics) <= max_chars:
        return metrics
    fitted, cuts = copy.deepcopy(metrics), []
    for name, cut in _CUTS:
        while _size(fitted) > max_chars and cut(fitted):
            if name not in cuts:
                cuts.append(name)
        if _size(fitted) <= max_chars:
            break
    fitted["trimmed"] = f"cut to fit the status table: {', '.join(cuts)}"
    return fitted


def _size(metrics: dict[str, Any]) -> int:
    return len(json.dumps(metrics))


def _trials(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    return (metrics.get("sweep") or {}).get("trials") or []


def _shorten_errors(limit: int) -> Callable[[dict[str, Any]], bool]:
    """Errors cut to `limit` printable ASCII characters (JSON escapes any other as up to 12)."""

    def cut(metrics: dict[str, Any]) -> bool:
        long = [t for t in _trials(metrics) if t.get("error") and len(json.dumps(t["error"])) > limit + 2]
        for trial in long:
            plain = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in trial["error"])
            trial["error"] = plain if len(plain) <= limit else plain[: limit - 3] + "..."
        return bool(long)

    return cut


def _thin(key: str, keep_at_least: int) -> Callable[[dict[str, Any]], bool]:
    """Every other point of a series, its first and last kept."""

    def cut(metrics: dict[str, Any]) -> bool:
        points = metrics.get(key) or []
        if len(points) <= keep_at_least:
            return False
        metrics[key] = [*points[:-1:2], points[-1]]
        return True

    return cut


def _drop_trial_curves(metrics: dict[str, Any]) -> bool:
    curves = [t for t in _trials(metrics) if t.get("dev_losses")]
    for trial in curves:
        trial["dev_losses"] = []
    return bool(curves)


_CUTS = (
    (f"trial errors over {ERROR_CHARS[0]} characters", _shorten_errors(ERROR_CHARS[0])),
    ("loss curve thinned", _thin("log_history", 25)),
    ("system metrics thinned", _thin("system_metrics", 10)),
    ("trials' per-epoch dev losses", _drop_trial_curves),
    (f"trial errors over {ERROR_CHARS[1]} characters", _shorten_errors(ERROR_CHARS[1])),
)
