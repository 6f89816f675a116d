"""The evaluate step: score the candidate (and the serving model) on heldout.json, decide, register.

Rejected candidates are registered too (tag decision=reject), so every trained model stays traceable
to its snapshot and its verdict; only the control plane acts on the decision.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch

from aks_jobs.lm.base_model import BaseModelError, load_local
from aks_jobs.lm.gate import Decision, Rules, decide
from aks_jobs.lm.perplexity import TextScore, score_texts
from aks_jobs.lm.tracking import flat_params, register_folder, use_experiment
from aks_jobs.lm.training import HELDOUT, SUMMARY

log = logging.getLogger(__name__)

EVALUATION = "evaluation.json"


@dataclass
class EvaluateRequest:
    model: Path
    output: Path
    serving_model: Path | None = None
    rules: Rules = Rules()
    model_name: str = "gpt2-pdf"
    register: bool = True
    experiment: str = "gpt2-pdf"


def read_train_output(model_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(heldout.json, train_summary.json) of a train output folder."""
    paths = model_dir / HELDOUT, model_dir / SUMMARY
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise BaseModelError(f"--model {model_dir}: no {' or '.join(missing)}; pass a train.py output folder")
    heldout, summary = (json.loads(path.read_text(encoding="utf-8")) for path in paths)
    if not any(heldout.get("blocks", [])):
        raise BaseModelError(f"--model {model_dir}: {HELDOUT} holds no text to evaluate on")
    return heldout, summary


def score_model(path: Path, option: str, texts: list[str]) -> TextScore:
    base = load_local(path, option)
    base.model.to("cuda" if torch.cuda.is_available() else "cpu")
    score = score_texts(base.model, base.tokenizer, texts)
    log.info("%s %s: loss %.4f, perplexity %.2f, %.4f bits/byte over %d tokens", option, path, score.loss,
             score.perplexity, score.bits_per_byte, score.tokens)
    return score


def registration_tags(heldout: dict[str, Any], summary: dict[str, Any], verdict: Decision,
                      candidate: TextScore, serving: TextScore | None) -> dict[str, str]:
    tags = {
        "snapshot": heldout.get("snapshot") or "",
        "documents_sha256": heldout.get("documents_sha256") or "",
        "decision": verdict.decision,
        "reason": verdict.reason,
        "base_model": summary.get("base_model", {}).get("resolved", ""),
        "base_model_kind": summary.get("base_model", {}).get("kind", ""),
        "train_run_id": summary.get("mlflow_run_id") or "",
    }
    tags.update({f"candidate_{key}": str(value) for key, value in candidate.to_dict().items()})
    if serving is not None:
        tags.update({f"serving_{key}": str(value) for key, value in serving.to_dict().items()})
    return tags


def evaluate(request: EvaluateRequest) -> dict[str, Any]:
    heldout, summary = read_train_output(request.model)
    texts = heldout["blocks"]
    candidate = score_model(request.model, "--model", texts)
    serving = score_model(request.serving_model, "--serving-model", texts) if request.serving_model else None
    verdict = decide(candidate, serving, request.rules)
    log.info("%s", verdict.reason)

    registered = None
    if request.register:
        use_experiment(request.experiment)
        with mlflow.start_run(run_name=f"evaluate-{heldout.get('snapshot')}"):
            mlflow.log_params(flat_params({"model": str(request.model), "serving_model": request.serving_model,
                                           "min_improvement": request.rules.min_improvement,
                                           "max_perplexity": request.rules.max_perplexity}))
            metrics = {f"candidate_{key}": value for key, value in candidate.to_dict().items()}
            if serving is not None:
                metrics.update({f"serving_{key}": value for key, value in serving.to_dict().items()})
            mlflow.log_metrics({key: float(value) for key, value in metrics.items()})
            tags = registration_tags(heldout, summary, verdict, candidate, serving)
            mlflow.set_tags(tags)
            mlflow.log_artifacts(str(request.model), artifact_path="model")
            version = register_folder(request.model_name, "model", tags)
        registered = {"name": request.model_name, "version": version}
        log.info("registered %s version %s (decision=%s)", request.model_name, version, verdict.decision)

    evaluation = {
        "decision": verdict.decision,
        "reason": verdict.reason,
        "candidate": {**candidate.to_dict(), "model": str(request.model)},
        "serving": None if serving is None else {**serving.to_dict(), "model": str(request.serving_model)},
        "improvement": verdict.improvement,
        "rules": {"min_improvement": request.rules.min_improvement,
                  "max_perplexity": request.rules.max_perplexity},
        "heldout_blocks": len(texts),
        "split": heldout.get("split"),  # says when the corpus was too small to hold anything out
        "snapshot": heldout.get("snapshot"),
        "documents_sha256": heldout.get("documents_sha256"),
        "registered": registered,
        # The train step's summary (metrics, loss curve): on AML a pipeline's outputs can be read only
        # once it completes, so the control plane takes the run's training figures from here.
        "training": summary,
    }
    request.output.mkdir(parents=True, exist_ok=True)
    (request.output / EVALUATION).write_text(json.dumps(evaluation, indent=2) + "\n", encoding="utf-8")
    return evaluation
