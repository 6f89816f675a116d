"""The Trainer's log history cut down to a loss curve small enough to travel with train_summary.json.

The control plane stores the run's train summary in one Azure Table property (64 KiB), and the UI
plots `log_history` from it; a long run logs thousands of entries. So: only the entries that are
points on a curve (train `loss` or `eval_loss`), only the keys worth plotting, values rounded, and at
most MAX_POINTS entries, evenly spread over the run with its first and last point always kept.
"""

from __future__ import annotations

from typing import Any

MAX_POINTS = 200  # ~16K characters of JSON at worst; a plot gains nothing from more
# What the UI plots and reads beside it; grad norms and speeds stay in MLflow.
KEYS = ("step", "epoch", "loss", "eval_loss", "learning_rate")
SIGNIFICANT_DIGITS = 5


def evenly(entries: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """At most `limit` of `entries`, evenly spaced, the first and the last always among them."""
    if len(entries) <= limit:
        return entries
    if limit <= 1:
        return entries[-1:] if limit == 1 else []
    last = len(entries) - 1
    return [entries[round(i * last / (limit - 1))] for i in range(limit)]


def _compact(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        key: float(f"{value:.{SIGNIFICANT_DIGITS}g}") if isinstance(value, float) else value
        for key, value in entry.items()
        if key in KEYS
    }


def loss_curve(log_history: list[dict[str, Any]], max_points: int = MAX_POINTS) -> list[dict[str, Any]]:
    """Trainer `state.log_history` -> its loss points (train and eval), at most `max_points`, in step order.

    Evaluations are few (one per epoch at most) and are kept first, up to half the budget; the
    training points get the rest.
    """
    evals = evenly([e for e in log_history if "eval_loss" in e], max_points // 2)
    trains = evenly([e for e in log_history if "loss" in e], max_points - len(evals))
    kept = {id(e) for e in evals + trains}
    return [_compact(e) for e in log_history if id(e) in kept]
