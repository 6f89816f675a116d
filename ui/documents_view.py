"""Rows of the documents table from GET /api/documents: each upload, its extraction state and messages."""

from __future__ import annotations

from typing import Any

from pipeline_contracts.api_responses import Document, FirstRun
from ui.times import shown

# Preprocess outcome per file (manifest status); empty until a run has extracted the file, when the
# API's own state says whether a run includes it yet.
_EXTRACTION = {"ok": "extracted", "warning": "extracted with warnings", "error": "not extracted"}
# The API's states of a document whose run failed (function_app/document_retries.py).
_NOT_TRAINED = ("failed", "waiting to retry")


def document_rows(documents: list[Document]) -> list[dict[str, Any]]:
    rows = []
    for doc in documents:
        outcome = doc.extraction
        messages = "; ".join(doc.messages)
        # A run that failed with the document outranks how its text came out: it is not trained on yet.
        failed = doc.state in _NOT_TRAINED
        errors = [messages if outcome == "error" else "", doc.last_error if failed else ""]
        rows.append(
            {
                "document": doc.name,
                "state": doc.state if failed else _EXTRACTION.get(outcome) or doc.state or outcome,
                "pages": doc.pages,
                "warnings": messages if outcome == "warning" else "",
                "errors": "; ".join(e for e in errors if e),
                "uploaded": shown(doc.uploaded_at),
                "first run": _first_run(doc.first_run),
                "same content as": ", ".join(doc.same_content_as),
            }
        )
    return rows


def _first_run(run: FirstRun | None) -> str:
    return f"{run.id} ({run.state})" if run else ""
