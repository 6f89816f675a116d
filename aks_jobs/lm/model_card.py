"""A registered version's model card: its date-based revision, its facts (pipeline_contracts.model_card),
the MODEL_CARD.md stored with its files and the registry tags that repeat the key facts."""

from __future__ import annotations

from datetime import UTC, datetime

from mlflow import MlflowClient

from pipeline_contracts.evaluation import Evaluation
from pipeline_contracts.model_card import MAX_LISTED, CardDocument, ModelCard
from pipeline_contracts.train_summary import SweepSummary

FILE_NAME = "MODEL_CARD.md"


def revision(client: MlflowClient, name: str, version: str) -> tuple[str, datetime]:
    """(YYYY.MM.DD-N, when registered): N counts this name's versions registered that UTC day up to this one.
    Derived from the versions' numbers and times, so two concurrent registrations never share one."""
    versions = client.search_model_versions(f"name='{name}'")
    at = {int(v.version): datetime.fromtimestamp(v.creation_timestamp / 1000, UTC) for v in versions}
    day = at[int(version)].date()
    rank = sum(1 for number, when in at.items() if when.date() == day and number <= int(version))
    return f"{day:%Y.%m.%d}-{rank}", at[int(version)]


def sweep_choice(sweep: SweepSummary | None) -> dict | None:
    if sweep is None:
        return None
    chosen = next((t for t in sweep.trials if t.trial == sweep.chosen_trial), None)
    return {"chosen_trial": sweep.chosen_trial, "trials": len(sweep.trials), **(chosen.settings if chosen else {})}


def build_card(
    evaluation: Evaluation, name: str, version: str, revision_name: str, at: datetime, documents: list[dict]
) -> ModelCard:
    training, serving, baseline = evaluation.training, evaluation.serving, evaluation.baseline
    return ModelCard(
        name=name,
        version=version,
        revision=revision_name,
        registered_utc=f"{at:%Y-%m-%dT%H:%M:%SZ}",
        snapshot=evaluation.snapshot,
        documents_sha256=evaluation.documents_sha256,
        documents_total=len(documents),
        documents=[CardDocument(**d) for d in documents[:MAX_LISTED]],
        base_model=training.base_model.resolved if training else "",
        preset=training.preset if training else "",
        hyperparameters=training.hyperparameters if training else {},
        sweep_choice=sweep_choice(training.sweep if training else None),
        kinds=training.kinds if training else [],
        split=evaluation.split,
        test_perplexity=evaluation.candidate.perplexity,
        test_bits_per_byte=evaluation.candidate.bits_per_byte,
        baseline_perplexity=baseline.perplexity if baseline else None,
        baseline_bits_per_byte=baseline.bits_per_byte if baseline else None,
        serving_perplexity=serving.perplexity if serving else None,
        serving_bits_per_byte=serving.bits_per_byte if serving else None,
        decision=evaluation.decision,
        reason=evaluation.reason,
    )


def _figure(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(card: ModelCard, documents: list[dict]) -> str:
    """MODEL_CARD.md: every document (not only the first MAX_LISTED), then the card's facts."""
    hyper = "\n".join(f"| {key} | {value} |" for key, value in sorted(card.hyperparameters.items()))
    sweep = "" if not card.sweep_choice else f"\nSweep: {card.sweep_choice}\n"
    # A | in a file name would end its table cell.
    rows = [(d["name"].replace("|", "\\|"), d["sha256"]) for d in documents]
    docs = "\n".join(f"| {name} | `{sha256}` |" for name, sha256 in rows) or "| (a plain text file) | |"
    limits = "\n".join(f"- {limit}" for limit in card.limits)
    kinds = (
        "Document kinds (a prompt starting with the token asks for that kind of text): "
        + ", ".join(f"`<|{kind}|>`" for kind in card.kinds)
        + "\n\n"
        if card.kinds
        else ""
    )
    return f"""# {card.name} {card.revision} (version {card.version})

Registered {card.registered_utc}. Decision: **{card.decision}**. {card.reason}

## Metrics (test text: {card.split or "held-out passages"})

| model | perplexity | bits/byte |
|---|---|---|
| this model | {_figure(card.test_perplexity, 2)} | {_figure(card.test_bits_per_byte, 4)} |
| base model before fine-tuning | {_figure(card.baseline_perplexity, 2)} | {_figure(card.baseline_bits_per_byte, 4)} |
| model serving at evaluation | {_figure(card.serving_perplexity, 2)} | {_figure(card.serving_bits_per_byte, 4)} |

## Training

Base model: {card.base_model}; preset {card.preset}.
{sweep}
| setting | value |
|---|---|
{hyper}

## Data

{kinds}Snapshot {card.snapshot} (documents sha256 {card.documents_sha256}), {card.documents_total} document(s):

| document | sha256 |
|---|---|
{docs}

## Limits

{limits}
"""


def card_tags(card: ModelCard) -> dict[str, str]:
    """The card's facts that registration_tags (scores, decision, snapshot, base model) does not already tag."""
    tags = {
        "revision": card.revision,
        "documents": str(card.documents_total),
        "preset": card.preset,
        "limits": " ".join(card.limits),
        "model_card": FILE_NAME,
    }
    for key in ("epochs", "learning_rate", "weight_decay", "warmup_ratio", "block_size", "effective_batch"):
        if key in card.hyperparameters:
            tags[f"hp.{key}"] = str(card.hyperparameters[key])
    if card.kinds:
        tags["kinds"] = ",".join(card.kinds)
    if card.sweep_choice:
        tags["sweep_chosen_trial"] = str(card.sweep_choice["chosen_trial"])
    return tags
