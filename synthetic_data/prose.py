"""Deterministic training text and hand-made preprocess snapshots for the train and evaluate tests."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from aks_jobs.pdf_text.manifest import DocumentEntry, combined_text, totals
from pipeline_contracts.snapshot_manifest import SnapshotManifest

WORDS = (
    "archive ship colony crater lamp harbour record mirror winter council pump rail greenhouse "
    "settler market water district beacon ledger valley"
).split()


def prose(seed: int, sentences: int) -> str:
    """English-like text, one sentence per line, the same for the same seed."""
    rng = random.Random(seed)
    return "".join(
        f"The {rng.choice(WORDS)} near the {rng.choice(WORDS)} keeps {rng.randint(2, 99)} "
        f"{rng.choice(WORDS)}s for the {rng.choice(WORDS)}.\n"
        for _ in range(sentences)
    )


def stamp_digest(stamp: str) -> str:
    """The documents_sha256 write_snapshot gives the snapshot of that stamp (one per snapshot, to tell them apart)."""
    return hashlib.sha256(stamp.encode()).hexdigest()


def write_snapshot(folder: Path, stamp: str, documents: list[str], manifest: bool = True) -> Path:
    """A snapshot laid out as preprocess writes it (text joined by its rule, manifest beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / f"combined_data_{stamp}.txt"
    text.write_text(combined_text(documents), encoding="utf-8")
    if manifest:
        entries = [
            DocumentEntry(
                name=f"doc{i}.pdf",
                sha256=f"{i:064x}",
                bytes=1,
                pages=1,
                chars=len(doc),
                status="ok",
                messages=[],
                cached=False,
                seconds=0.0,
            )
            for i, doc in enumerate(documents)
        ]
        manifest = SnapshotManifest(
            snapshot=text.name,
            created_utc="2025-01-01T00:00:00Z",
            documents_sha256=stamp_digest(stamp),
            documents=entries,
            totals=totals(entries),
        )
        (folder / f"combined_data_{stamp}.manifest.json").write_text(manifest.model_dump_json())
    return text
