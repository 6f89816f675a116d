"""The manifest that travels with a snapshot: which documents, their hashes, and what happened to each."""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from aks_jobs.pdf_text.document import Status

# Documents are joined with one blank line; with the per-document `chars` this locates each one.
DOCUMENT_SEPARATOR = "\n\n"


@dataclass
class DocumentEntry:
    name: str
    sha256: str
    bytes: int
    pages: int
    chars: int  # characters this document contributed to the snapshot
    status: Status
    messages: list[str]
    cached: bool
    seconds: float
    ocr_pages: list[int] = field(default_factory=list)  # 1-based pages whose text was read by OCR
    records: int = 0  # instruction files (.jsonl/.json): records used as training examples
    engine: str = ""  # the PDF engine that read the text: "pdfium", "pypdf", "pdfium+pypdf", "text", "instructions" ("" if none)


def documents_digest(entries: list[DocumentEntry]) -> str:
    """sha256 over the sorted "name:sha256" lines (each ending in a newline) of all documents."""
    lines = sorted(f"{entry.name}:{entry.sha256}\n" for entry in entries)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def combined_text(texts: list[str]) -> str:
    """The snapshot text: each document's text, in the order given, separated by a blank line."""
    return DOCUMENT_SEPARATOR.join(texts) + "\n" if texts else ""


def totals(entries: list[DocumentEntry]) -> dict[str, int]:
    statuses = Counter(entry.status for entry in entries)
    return {
        "documents": len(entries),
        "ok": statuses["ok"],
        "warning": statuses["warning"],
        "error": statuses["error"],
        "pages": sum(entry.pages for entry in entries),
        "chars": sum(entry.chars for entry in entries),
    }


def build_manifest(snapshot: str, created_utc: str, entries: list[DocumentEntry]) -> dict[str, Any]:
    return {
        "snapshot": snapshot,
        "created_utc": created_utc,
        "documents_sha256": documents_digest(entries),
        "documents": [asdict(entry) for entry in entries],
        "totals": totals(entries),
    }
