"""Tables and series for the run history: rows of GET /api/runs, and one run's loss curve and evaluation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ui.times import shown

# Trainer log entries (HF `trainer.state.log_history` shape) carry the step and one of these losses.
# Its closing entry's "train_loss" is the run's average, not a point on the curve, so it is left out.
_LOSS_KEYS = {"loss": "train loss", "eval_loss": "eval loss"}


def run_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run summary of GET /api/runs for the history table, newest first as the API gives them."""
    return [{
        "run": run.get("id"),
        "state": run.get("state"),
        "trigger": run.get("trigger"),
        "started": shown(run.get("created_at")),
        "last change": shown(run.get("updated_at")),
        "documents": run.get("documents"),
        "new documents": run.get("new_documents"),
        "perplexity": run.get("perplexity"),
        "model version": run.get("model_version"),
        "error": run.get("error"),
    } for run in runs]


def loss_curve(run: dict[str, Any]) -> list[dict[str, float]]:
    """[{step, "train loss", "eval loss"}] from the run's per-step training log, [] if it has none."""
    points: dict[int, dict[str, float]] = {}
    for entry in (run.get("metrics") or {}).get("log_history") or []:
        step = entry.get("step")
        if not isinstance(step, int):
            continue
        for key, series in _LOSS_KEYS.items():
            value = entry.get(key)
            if isinstance(value, (int, float)):
                points.setdefault(step, {"step": step})[series] = float(value)
    return [points[step] for step in sorted(points)]


def final_losses(run: dict[str, Any]) -> dict[str, float]:
    """The end-of-training figures the train summary reports (what exists without a per-step log)."""
    metrics = run.get("metrics") or {}
    return {label: float(metrics[key]) for key, label in
            (("train_loss", "train loss"), ("eval_loss", "eval loss"), ("perplexity", "perplexity"),
             ("tokens_per_s", "tokens/s")) if isinstance(metrics.get(key), (int, float))}


@dataclass(frozen=True)
class Evaluation:
    decision: str
    reason: str
    figures: dict[str, Any]  # candidate vs serving held-out scores, and what was registered


def evaluation(run: dict[str, Any]) -> Evaluation | None:
    """What evaluate decided and why, from the run's evaluation.json; None before evaluate has run."""
    result = run.get("evaluation") or {}
    if not result:
        return None
    registered = result.get("registered") or {}
    serving = result.get("serving") or {}  # None when no model was serving yet
    return Evaluation(
        decision=str(result.get("decision")),
        reason=str(result.get("reason") or ""),
        figures={
            "candidate perplexity": _candidate(run).get("perplexity"),
            "serving perplexity": serving.get("perplexity"),
            # What the gate compares: unlike token perplexity it holds across tokenizers.
            "candidate bits/byte": _candidate(run).get("bits_per_byte"),
            "serving bits/byte": serving.get("bits_per_byte"),
            "registered": f"{registered['name']} version {registered['version']}" if registered else None,
        },
    )


def transition_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Every state the run went through and every event (retries, notes), in time order."""
    rows = [(t.get("at") or "", t.get("state"), t.get("detail")) for t in run.get("transitions") or []]
    rows += [(e.get("at") or "", e.get("event"), e.get("detail")) for e in run.get("events") or []]
    rows.sort(key=lambda row: row[0])  # ISO times in one zone sort as text
    return [{"at": shown(at), "state": state, "detail": detail} for at, state, detail in rows]


def _candidate(run: dict[str, Any]) -> dict[str, Any]:
    return (run.get("evaluation") or {}).get("candidate") or {}
