"""The model card of a registered version (seed 002's date-based revisions): what it was trained on, how,
how it scored and what the gate decided. Built by the evaluate step (aks_jobs/lm/model_card.py), stored
as MODEL_CARD.md with the model's files and as registry tags, carried in evaluation.json for the UI.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline_contracts.document_kinds import Kind

LIMITS = (
    "English text only: the base model (GPT-2) was trained on English web text.",
    "It completes text in the style of the documents; it does not answer questions reliably, and what it "
    "writes may be wrong even when it reads as fact.",
    "It knows only what the base model and the documents listed here held.",
)


class CardDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    sha256: str


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    revision: str  # YYYY.MM.DD-N: the Nth version of this name registered that UTC day
    registered_utc: str
    snapshot: str | None
    documents_sha256: str | None
    documents_total: int = Field(ge=0)
    documents: list[CardDocument]  # at most MAX_LISTED here; MODEL_CARD.md lists them all
    base_model: str
    preset: str
    hyperparameters: dict[str, Any]
    sweep_choice: dict[str, Any] | None = None  # the chosen trial and its settings, when a sweep ran
    kinds: list[Kind] = Field(default_factory=list)  # document kinds the model has a token for
    split: str | None
    test_perplexity: float
    test_bits_per_byte: float
    baseline_perplexity: float | None  # the base model on the same test text, before fine-tuning
    baseline_bits_per_byte: float | None
    serving_perplexity: float | None  # the model serving when this one was evaluated
    serving_bits_per_byte: float | None
    decision: str
    reason: str
    limits: list[str] = Field(default_factory=lambda: list(LIMITS))


MAX_LISTED = 50  # evaluation.json rides in one status-table property
