"""run_metrics.fit: a run's metrics always fit one status-table property, and what a person needs stays."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from function_app import run_metrics
from pipeline_contracts.api_requests import MAX_SWEEP_TRIALS
from pipeline_contracts.train_summary import TrainSummary
from tests.contract_samples import train_summary


@st.composite
def metrics(draw) -> dict:
    trials = [
        {
            "trial": n,
            "settings": {"learning_rate": draw(st.floats(1e-6, 1e-2)), "epochs": draw(st.integers(1, 20))},
            "dev_losses": draw(st.lists(st.floats(0.1, 20), max_size=20)),
            "stopped_early": draw(st.booleans()),
            "dev_loss": draw(st.none() | st.floats(0.1, 20)),
            "mlflow_run_id": f"{n:032x}",
            "error": draw(st.none() | st.text(min_size=1, max_size=3000)),
        }
        for n in range(1, draw(st.integers(0, MAX_SWEEP_TRIALS)) + 1)
    ]
    sweep = {"primary_metric": "dev_loss", "goal": "minimize", "chosen_trial": 1, "mlflow_run_id": None}
    curve = [{"step": s, "loss": 3.123456789, "epoch": s / 7} for s in range(draw(st.integers(0, 200)))]
    samples = [{"s": float(i), "cpu_percent": 55.5, "memory_mb": 12345.6} for i in range(draw(st.integers(0, 60)))]
    summary = train_summary(sweep={**sweep, "trials": trials} if trials else None, log_history=curve)
    return {**summary, "system_metrics": samples}


@given(metrics())
@settings(max_examples=150, deadline=None)
def test_metrics_always_fit_and_keep_every_trials_settings_loss_and_end(given_metrics: dict) -> None:
    fitted = run_metrics.fit(given_metrics)

    assert len(json.dumps(fitted)) <= run_metrics.MAX_CHARS
    if len(json.dumps(given_metrics)) <= run_metrics.MAX_CHARS:
        assert fitted is given_metrics  # nothing cut when nothing has to be
        return
    assert fitted["trimmed"].startswith("cut to fit the status table: ")
    summary = TrainSummary.model_validate({k: v for k, v in fitted.items() if k != "trimmed"})  # still the contract
    before = (given_metrics.get("sweep") or {}).get("trials") or []
    after = summary.sweep.trials if summary.sweep else []
    keep = ("trial", "settings", "dev_loss", "stopped_early", "mlflow_run_id")
    assert [{k: t[k] for k in keep} for t in before] == [t.model_dump(include=set(keep)) for t in after]
    assert [t["error"] is None for t in before] == [t.error is None for t in after]
    history = summary.log_history
    assert not given_metrics["log_history"] or history[-1] == given_metrics["log_history"][-1]  # the end stays


def test_the_worst_case_fits() -> None:
    """The most trials, each failed with a long message in a script JSON escapes, the longest series."""
    trial = {
        "settings": {
            "learning_rate": 1.2345678901234e-4,
            "epochs": 20,
            "warmup_ratio": 0.0123456789,
            "weight_decay": 0.0987654321,
        },
        "dev_losses": [3.123456789012345] * 20,
        "stopped_early": True,
        "stopped_by": "Azure ML (Bandit policy or the sweep's time limit)",
        "dev_loss": None,
        "mlflow_run_id": "f" * 32,
        "error": '\u2603\U0001f600\n\\"' * 1000,
    }
    trials = [{"trial": n, **trial} for n in range(1, MAX_SWEEP_TRIALS + 1)]
    sweep = {
        "primary_metric": "dev_loss",
        "goal": "minimize",
        "chosen_trial": 1,
        "mlflow_run_id": None,
        "trials": trials,
    }
    curve = [{"step": s, "loss": 3.123456789, "learning_rate": 1.23456e-4, "epoch": s / 7} for s in range(200)]
    samples = [
        {"s": float(i), "cpu_percent": 55.5, "memory_mb": 12345.6, "gpu_percent": 99.9, "gpu_memory_mb": 80000.1}
        for i in range(60)
    ]
    metrics = {**train_summary(sweep=sweep, log_history=curve), "system_metrics": samples}

    fitted = run_metrics.fit(metrics)

    assert len(json.dumps(fitted)) <= run_metrics.MAX_CHARS
    assert len(TrainSummary.model_validate({k: v for k, v in fitted.items() if k != "trimmed"}).sweep.trials) == 50
