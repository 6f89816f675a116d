"""Valid job outputs for tests that stand in for the jobs: a train summary and an evaluation as the steps write
them (pipeline_contracts), with the figures a test cares about overridden."""
from __future__ import annotations

from typing import Any

from pipeline_contracts.evaluation import Evaluation
from pipeline_contracts.train_summary import TrainSummary


def train_summary(**figures: Any) -> dict[str, Any]:
    """train_summary.json of a short offline run; `figures` replace its fields (e.g. perplexity=12.5)."""
    summary = {
        "snapshot": "combined_data_20261123_101500.txt", "snapshot_path": "/mnt/processed/combined_data_20261123_101500.txt",
        "documents_sha256": "ab" * 32, "documents": 1,
        "base_model": {"requested": "offline", "resolved": "offline", "kind": "offline"}, "preset": "memorize",
        "hyperparameters": {"epochs": 1.0}, "train_loss": 2.7, "final_loss": 2.6, "eval_loss": 2.49,
        "perplexity": 12.06, "eval_bits_per_byte": 1.2, "eval_tokens": 100, "steps": 2, "epochs": 1.0,
        "train_tokens": 2048, "tokens_per_s": 1000.0, "train_runtime_s": 2.0, "wall_s": 3.0, "device": "cpu",
        "ddp_backend": None, "precision": "fp32", "attention": "sdpa", "execution": {},
        "blocks": {"train": 4, "eval": 1, "split": None}, "mlflow_run_id": "run-1",
        "log_history": [{"step": 1, "loss": 3.1}, {"step": 2, "loss": 2.7}],
    }
    return TrainSummary.model_validate({**summary, **figures}).model_dump(mode="json")


def _score(perplexity: float, model: str) -> dict[str, Any]:
    return {"model": model, "loss": 2.5, "perplexity": perplexity, "bits_per_byte": 1.2, "tokens": 100, "bytes": 400}


def evaluation(decision: str = "promote", *, candidate: float = 12.5, serving: float | None = 20.1,
               registered: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """evaluation.json with these candidate and serving perplexities; `fields` replace the rest."""
    result = {
        "decision": decision, "reason": f"perplexity {candidate} against {serving}",
        "candidate": _score(candidate, "/mnt/model"),
        "serving": None if serving is None else _score(serving, "/mnt/serving"),
        "improvement": None, "rules": {"min_improvement": 0.0, "max_perplexity": None}, "heldout_blocks": 1,
        "split": None, "snapshot": "combined_data_20261123_101500.txt", "documents_sha256": "ab" * 32,
        "registered": registered, "training": train_summary(perplexity=candidate),
    }
    return Evaluation.model_validate({**result, **fields}).model_dump(mode="json")
