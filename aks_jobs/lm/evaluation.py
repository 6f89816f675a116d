"""The evaluate step: score the candidate (and the serving model) on heldout.json (the test text), decide,
register with a date-based revision and a model card.

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
from pydantic import ValidationError

from aks_jobs.lm.base_model import BaseModelError, load_local
from aks_jobs.lm.gate import Rules, decide
from aks_jobs.lm.model_card import FILE_NAME as CARD_FILE
from aks_jobs.lm.model_card import build_card, card_tags, markdown, revision
from aks_jobs.lm.perplexity import TextScore, score_texts
from aks_jobs.lm.tracking import flat_params, register_folder, use_experiment
from aks_jobs.lm.training import HELDOUT, SUMMARY
from aks_jobs.lm.trial_record import gather
from pipeline_contracts import evaluation as contract
from pipeline_contracts.evaluation import Evaluation, RegisteredModel, Score
from pipeline_contracts.train_summary import TrainSummary

log = logging.getLogger(__name__)

EVALUATION = contract.FILE_NAME


@dataclass
class EvaluateRequest:
    model: Path
    output: Path
    serving_model: Path | None = None
    trials: Path | None = None  # an Azure ML sweep's trials folder (aks_jobs/lm/trial_record.py)
    sweep_limits: tuple[int | None, int | None] = (None, None)  # its planned trials and time limit, if known
    rules: Rules = Rules()
    model_name: str = "gpt2-pdf"
    register: bool = True
    experiment: str = "gpt2-pdf"


def read_train_output(model_dir: Path) -> tuple[dict[str, Any], TrainSummary]:
    """(heldout.json, train_summary.json) of a train output folder."""
    paths = model_dir / HELDOUT, model_dir / SUMMARY
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise BaseModelError(f"--model {model_dir}: no {' or '.join(missing)}; pass a train.py output folder")
    heldout = json.loads(paths[0].read_text(encoding="utf-8"))
    try:
        summary = TrainSummary.model_validate_json(paths[1].read_bytes())
    except ValidationError as error:
        raise BaseModelError(
            f"--model {model_dir}: {SUMMARY} is not a train summary ({error}); pass a train.py output folder"
        ) from error
    if not any(heldout.get("blocks", [])):
        raise BaseModelError(f"--model {model_dir}: {HELDOUT} holds no text to evaluate on")
    return heldout, summary


def score_model(path: Path, option: str, texts: list[str]) -> TextScore:
    base = load_local(path, option)
    base.model.to("cuda" if torch.cuda.is_available() else "cpu")
    score = score_texts(base.model, base.tokenizer, texts)
    log.info(
        "%s %s: loss %.4f, perplexity %.2f, %.4f bits/byte over %d tokens",
        option,
        path,
        score.loss,
        score.perplexity,
        score.bits_per_byte,
        score.tokens,
    )
    return score


def registration_tags(heldout: dict[str, Any], summary: TrainSummary, evaluation: Evaluation) -> dict[str, str]:
    tags = {
        "snapshot": heldout.get("snapshot") or "",
        "documents_sha256": heldout.get("documents_sha256") or "",
        "decision": evaluation.decision,
        "reason": evaluation.reason,
        "base_model": summary.base_model.resolved,
        "base_model_kind": summary.base_model.kind,
        "train_run_id": summary.mlflow_run_id or "",
    }
    for role in ("candidate", "serving", "baseline"):
        score = getattr(evaluation, role)
        if score is not None:
            tags.update({f"{role}_{key}": str(value) for key, value in score.model_dump(exclude={"model"}).items()})
    return tags


def register(request: EvaluateRequest, heldout: dict[str, Any], evaluation: Evaluation) -> Evaluation:
    """Log the evaluation, register the candidate with its revision, tags and MODEL_CARD.md; the card added."""
    candidate, serving, baseline = evaluation.candidate, evaluation.serving, evaluation.baseline
    use_experiment(request.experiment)
    with mlflow.start_run(run_name=f"evaluate-{heldout.get('snapshot')}"):
        mlflow.log_params(
            flat_params(
                {
                    "model": str(request.model),
                    "serving_model": request.serving_model,
                    "min_improvement": request.rules.min_improvement,
                    "max_perplexity": request.rules.max_perplexity,
                }
            )
        )
        metrics = {
            f"{role}_{key}": value
            for role, score in (("candidate", candidate), ("serving", serving), ("baseline", baseline))
            if score is not None
            for key, value in score.model_dump(exclude={"model"}).items()
        }
        mlflow.log_metrics({key: float(value) for key, value in metrics.items()})
        tags = registration_tags(heldout, evaluation.training, evaluation)
        mlflow.set_tags(tags)
        mlflow.log_artifacts(str(request.model), artifact_path="model")
        version = register_folder(request.model_name, "model", tags)
        client = mlflow.MlflowClient()
        name, at = revision(client, request.model_name, version)
        documents = heldout.get("documents") or []
        card = build_card(evaluation, request.model_name, version, name, at, documents)
        mlflow.log_text(markdown(card, documents), f"model/{CARD_FILE}")  # in the version's folder
        for key, value in card_tags(card).items():
            client.set_model_version_tag(request.model_name, version, key, value)
    log.info("registered %s version %s, %s (decision=%s)", request.model_name, version, name, evaluation.decision)
    return evaluation.model_copy(
        update={"registered": RegisteredModel(name=request.model_name, version=version), "card": card}
    )


def evaluate(request: EvaluateRequest) -> Evaluation:
    heldout, summary = read_train_output(request.model)
    if request.trials is not None and summary.sweep is None:
        summary = summary.model_copy(update={"sweep": gather(request.trials, summary, *request.sweep_limits)})
    texts = heldout["blocks"]
    candidate = score_model(request.model, "--model", texts)
    serving = score_model(request.serving_model, "--serving-model", texts) if request.serving_model else None
    verdict = decide(candidate, serving, request.rules)
    log.info("%s", verdict.reason)
    evaluation = Evaluation(
        decision=verdict.decision,
        reason=verdict.reason,
        candidate=Score(**candidate.to_dict(), model=str(request.model)),
        serving=None if serving is None else Score(**serving.to_dict(), model=str(request.serving_model)),
        baseline=None
        if summary.baseline is None
        else Score(**summary.baseline.model_dump(), model=summary.base_model.resolved),
        improvement=verdict.improvement,
        rules=contract.Rules(
            min_improvement=request.rules.min_improvement, max_perplexity=request.rules.max_perplexity
        ),
        heldout_blocks=len(texts),
        split=heldout.get("split"),
        snapshot=heldout.get("snapshot"),
        documents_sha256=heldout.get("documents_sha256"),
        registered=None,
        training=summary,
    )
    if request.register:
        evaluation = register(request, heldout, evaluation)
    request.output.mkdir(parents=True, exist_ok=True)
    (request.output / EVALUATION).write_text(evaluation.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return evaluation
