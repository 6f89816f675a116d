"""Tables and series for the run history: rows of GET /api/runs, and one run's loss curve and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline_contracts.api_responses import RunDetail, RunSummary
from pipeline_contracts.evaluation import Evaluation as EvaluationFile
from pipeline_contracts.train_summary import SweepSummary
from ui.times import shown

# Trainer log entries (HF `trainer.state.log_history` shape) carry the step and one of these losses.
# Its closing entry's "train_loss" is the run's average, not a point on the curve, so it is left out.
_LOSS_KEYS = {"loss": "train loss", "eval_loss": "eval loss"}


def run_rows(runs: list[RunSummary]) -> list[dict[str, Any]]:
    """One row per run summary of GET /api/runs for the history table, newest first as the API gives them."""
    return [
        {
            "run": run.id,
            "state": run.state,
            "trigger": run.trigger,
            "started": shown(run.created_at),
            "last change": shown(run.updated_at),
            "documents": run.documents,
            "new documents": run.new_documents,
            "perplexity": run.perplexity,
            "model version": run.model_version,
            "error": run.error,
        }
        for run in runs
    ]


def loss_curve(run: RunDetail) -> list[dict[str, float]]:
    """[{step, "train loss", "eval loss"}] from the run's per-step training log, [] if it has none."""
    points: dict[int, dict[str, float]] = {}
    for entry in run.metrics.get("log_history") or []:
        step = entry.get("step")
        if not isinstance(step, int):
            continue
        for key, series in _LOSS_KEYS.items():
            value = entry.get(key)
            if isinstance(value, (int, float)):
                points.setdefault(step, {"step": step})[series] = float(value)
    return [points[step] for step in sorted(points)]


def final_losses(run: RunDetail) -> dict[str, float]:
    """The end-of-training figures the train summary reports (what exists without a per-step log)."""
    metrics = run.metrics
    return {
        label: float(metrics[key])
        for key, label in (
            ("train_loss", "train loss"),
            ("eval_loss", "eval loss"),
            ("perplexity", "perplexity"),
            ("tokens_per_s", "tokens/s"),
        )
        if isinstance(metrics.get(key), (int, float))
    }


def sweep(run: RunDetail) -> SweepSummary | None:
    """The sweep the train step ran (its trials and the chosen one), None when it trained once."""
    found = run.metrics.get("sweep")
    return SweepSummary.model_validate(found) if found else None


def sweep_rows(sweep: SweepSummary) -> list[dict[str, Any]]:
    """One row per trial: its settings (a column each), dev loss, stopped early, chosen, error."""
    return [
        {
            "trial": trial.trial,
            **trial.settings,
            "dev loss": trial.dev_loss,
            "epochs evaluated": len(trial.dev_losses),
            "stopped early": trial.stopped_early,
            "chosen": trial.trial == sweep.chosen_trial,
            "error": trial.error,
        }
        for trial in sweep.trials
    ]


def sweep_curves(sweep: SweepSummary) -> list[dict[str, float]]:
    """[{epoch, "trial N": dev loss}]: each trial's dev loss per epoch, one series per trial."""
    points: dict[int, dict[str, float]] = {}
    for trial in sweep.trials:
        for epoch, loss in enumerate(trial.dev_losses, 1):
            points.setdefault(epoch, {"epoch": epoch})[f"trial {trial.trial}"] = loss
    return [points[epoch] for epoch in sorted(points)]


@dataclass(frozen=True)
class Evaluation:
    decision: str
    reason: str
    figures: dict[str, Any]  # candidate vs serving held-out scores, and what was registered


def evaluation(run: RunDetail) -> Evaluation | None:
    """What evaluate decided and why, from the run's evaluation.json; None before evaluate has run (or for a
    run stored with an evaluation this version cannot read)."""
    result = run.evaluation
    if not isinstance(result, EvaluationFile):
        return None
    registered, serving = result.registered, result.serving  # serving: None when no model was serving yet
    return Evaluation(
        decision=result.decision,
        reason=result.reason,
        figures={
            "candidate perplexity": result.candidate.perplexity,
            "serving perplexity": serving.perplexity if serving else None,
            # What the gate compares: unlike token perplexity it holds across tokenizers.
            "candidate bits/byte": result.candidate.bits_per_byte,
            "serving bits/byte": serving.bits_per_byte if serving else None,
            "registered": f"{registered.name} version {registered.version}" if registered else None,
        },
    )


def transition_rows(run: RunDetail) -> list[dict[str, Any]]:
    """Every state the run went through and every event (retries, notes), in time order."""
    rows = [(t.at, t.state, t.detail) for t in run.transitions]
    rows += [(e.at, e.event, e.detail) for e in run.events]
    rows.sort(key=lambda row: row[0])  # ISO times in one zone sort as text
    return [{"at": shown(at), "state": state, "detail": detail} for at, state, detail in rows]
