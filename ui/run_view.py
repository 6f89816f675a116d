"""Tables and series for the run history: rows of GET /api/runs, one run's loss curve, system metrics and
evaluation, and the serving model's card."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline_contracts.api_responses import RunDetail, RunSummary, Status
from pipeline_contracts.evaluation import Evaluation as EvaluationFile
from pipeline_contracts.model_card import ModelCard
from pipeline_contracts.train_summary import SweepSummary, SystemSample
from ui.times import shown

# Trainer log entries (HF `trainer.state.log_history` shape) carry the step and one of these losses; the
# Trainer evaluates on the dev blocks. The closing entry's "train_loss" is the run's average, not a point.
_LOSS_KEYS = {"loss": "train loss", "eval_loss": "dev loss"}
_GB = 1000  # MLflow reports megabytes


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
            ("eval_loss", "test loss"),
            ("perplexity", "test perplexity"),
            ("tokens_per_s", "tokens/s"),
        )
        if isinstance(metrics.get(key), (int, float))
    }


def system_metrics(run: RunDetail) -> dict[str, list[dict[str, float]]]:
    """{"utilisation": [{s, "CPU %"[, "GPU %"]}], "memory": [{s, "memory GB"[, "GPU memory GB"]}]} sampled
    during training; empty lists when the run has none."""
    samples = [SystemSample.model_validate(x) for x in run.metrics.get("system_metrics") or []]

    def series(columns: dict[str, tuple[str, float]]) -> list[dict[str, float]]:
        rows = [
            {
                "s": x.s,
                **{
                    label: getattr(x, key) / scale
                    for label, (key, scale) in columns.items()
                    if getattr(x, key) is not None
                },
            }
            for x in samples
        ]
        return [row for row in rows if len(row) > 1]

    return {
        "utilisation": series({"CPU %": ("cpu_percent", 1), "GPU %": ("gpu_percent", 1)}),
        "memory": series({"memory GB": ("memory_mb", _GB), "GPU memory GB": ("gpu_memory_mb", _GB)}),
    }


def sweep(run: RunDetail) -> SweepSummary | None:
    """The sweep the train step ran (its trials and the chosen one), None when it trained once."""
    found = run.metrics.get("sweep")
    return SweepSummary.model_validate(found) if found else None


def sweep_rows(sweep: SweepSummary) -> list[dict[str, Any]]:
    """One row per trial: its settings (a column each), dev loss, stopped early (by what), chosen, error."""
    return [
        {
            "trial": trial.trial,
            **trial.settings,
            "dev loss": trial.dev_loss,
            "epochs evaluated": len(trial.dev_losses),
            "stopped early": trial.stopped_early,
            "stopped by": trial.stopped_by,
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
    baseline = result.baseline  # None in evaluations written before it was measured
    return Evaluation(
        decision=result.decision,
        reason=result.reason,
        figures={
            "candidate perplexity": result.candidate.perplexity,
            "serving perplexity": serving.perplexity if serving else None,
            "base model perplexity": baseline.perplexity if baseline else None,  # before fine-tuning
            # What the gate compares: unlike token perplexity it holds across tokenizers.
            "candidate bits/byte": result.candidate.bits_per_byte,
            "serving bits/byte": serving.bits_per_byte if serving else None,
            "base model bits/byte": baseline.bits_per_byte if baseline else None,
            "registered": f"{registered.name} version {registered.version}" if registered else None,
        },
    )


def transition_rows(run: RunDetail) -> list[dict[str, Any]]:
    """Every state the run went through and every event (retries, notes), in time order."""
    rows = [(t.at, t.state, t.detail) for t in run.transitions]
    rows += [(e.at, e.event, e.detail) for e in run.events]
    rows.sort(key=lambda row: row[0])  # ISO times in one zone sort as text
    return [{"at": shown(at), "state": state, "detail": detail} for at, state, detail in rows]


def serving_run_id(status: Status, runs: list[RunSummary]) -> str | None:
    """The newest run that registered the version now serving (its evaluation carries the model card)."""
    serving = status.serving_model
    if serving is None:
        return None
    return next((run.id for run in runs if run.model_version == serving.version), None)


def card(run: RunDetail) -> ModelCard | None:
    result = run.evaluation
    return result.card if isinstance(result, EvaluationFile) else None


def card_facts(card: ModelCard) -> dict[str, Any]:
    """The card's one-line facts, for a one-row table."""
    sweep = card.sweep_choice
    return {
        "revision": card.revision,
        "version": f"{card.name} version {card.version}",
        "registered": shown(card.registered_utc),
        "base model": card.base_model,
        "test perplexity": card.test_perplexity,
        "base model perplexity": card.baseline_perplexity,
        "serving perplexity then": card.serving_perplexity,
        "decision": card.decision,
        "preset": card.preset,
        "sweep": f"trial {sweep['chosen_trial']} of {sweep['trials']}" if sweep else None,
        "document kinds": ", ".join(card.kinds) or None,
        "snapshot": card.snapshot,
    }


def card_documents(card: ModelCard) -> list[dict[str, str]]:
    return [{"file": d.name, "sha256": d.sha256} for d in card.documents]
