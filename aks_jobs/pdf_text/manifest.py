"""The manifest that travels with a snapshot (pipeline_contracts.snapshot_manifest): built from each document's
entry, with the digest over all of them and the totals."""

from __future__ import annotations

import hashlib
from collections import Counter

from pipeline_contracts.snapshot_manifest import DocumentEntry, SnapshotManifest, Totals

__all__ = ["DOCUMENT_SEPARATOR", "DocumentEntry", "build_manifest", "combined_text", "documents_digest", "totals"]

# Documents are joined with one blank line; with the per-document `chars` this locates each one.
DOCUMENT_SEPARATOR = "\n\n"


def documents_digest(entries: list[DocumentEntry]) -> str:
    """sha256 over the sorted "name:sha256" lines (each ending in a newline) of all documents."""
    lines = sorted(f"{entry.name}:{entry.sha256}\n" for entry in entries)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def combined_text(texts: list[str]) -> str:
    """The snapshot text: each document's text, in the order given, separated by a blank line."""
    return DOCUMENT_SEPARATOR.join(texts) + "\n" if texts else ""


def totals(entries: list[DocumentEntry]) -> Totals:
    statuses = Counter(entry.status for entry in entries)
    return Totals(
        documents=len(entries),
        ok=statuses["ok"],
        warning=statuses["warning"],
        error=statuses["error"],
        pages=sum(entry.pages for entry in entries),
        chars=sum(entry.chars for entry in entries),
    )


def build_manifest(snapshot: str, created_utc: str, entries: list[DocumentEntry]) -> SnapshotManifest:
    return SnapshotManifest(
        snapshot=snapshot,
        created_utc=created_utc,
        documents_sha256=documents_digest(entries),
        documents=entries,
        totals=totals(entries),
        kinds=sorted({entry.kind for entry in entries if entry.kind and entry.chars}),
    )
