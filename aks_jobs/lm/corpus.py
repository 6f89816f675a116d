"""Read the training text: the newest complete snapshot (or one .txt file), its manifest, its documents."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from aks_jobs.pdf_text.manifest import DOCUMENT_SEPARATOR
from pipeline_contracts.blob_layout import SNAPSHOT_PREFIX, manifest_file
from pipeline_contracts.snapshot_manifest import SnapshotManifest
from pipeline_contracts.snapshot_ref import read_ref

log = logging.getLogger(__name__)


class CorpusError(ValueError):
    """The training data cannot be used; the message names the path and what to do."""


@dataclass(frozen=True)
class Corpus:
    path: Path
    manifest: SnapshotManifest | None
    documents: list[str]  # the snapshot's documents, in snapshot order

    @property
    def snapshot(self) -> str:
        return self.path.name

    @property
    def kinds(self) -> list[str]:
        """The document kinds of the snapshot (a .txt without a manifest has none)."""
        return self.manifest.kinds if self.manifest else []

    @property
    def documents_sha256(self) -> str | None:
        return self.manifest.documents_sha256 if self.manifest else None


def manifest_path(text_path: Path) -> Path:
    return text_path.with_name(manifest_file(text_path.name))


def newest_snapshot(folder: Path) -> Path:
    """The lexicographically last combined_data_*.txt whose manifest exists.

    preprocess writes the manifest last, so a snapshot without one is incomplete (or being written).
    """
    candidates = sorted(folder.glob(f"{SNAPSHOT_PREFIX}*.txt"), reverse=True)
    for path in candidates:
        if manifest_path(path).is_file():
            return path
        log.warning("skipping %s: no %s beside it (incomplete snapshot)", path.name, manifest_path(path).name)
    found = f"{len(candidates)} snapshot(s) without a manifest" if candidates else f"no {SNAPSHOT_PREFIX}*.txt"
    raise CorpusError(f"--data {folder}: {found}; run preprocess into this folder first, or pass a .txt file as --data")


def split_documents(text: str, manifest: SnapshotManifest | None) -> list[str]:
    """Cut the snapshot into its documents with the manifest's per-document `chars`.

    preprocess joins the documents that gave text with DOCUMENT_SEPARATOR and ends with a newline.
    If the manifest does not describe this text exactly, the whole text is one document.
    """
    lengths = [entry.chars for entry in manifest.documents] if manifest else []
    lengths = [length for length in lengths if length > 0]
    documents, start = [], 0
    for length in lengths:
        documents.append(text[start : start + length])
        start += length + len(DOCUMENT_SEPARATOR)
    if not lengths or DOCUMENT_SEPARATOR.join(documents) + "\n" != text:
        if manifest is not None:
            log.warning("the manifest's document lengths do not match the text; using it as one document")
        return [text]
    return documents


def snapshot_named(folder: Path, ref_folder: Path) -> Path:
    """The snapshot in `folder` that ref_folder/snapshot.json names (what this run's preprocess wrote)."""
    try:
        name = read_ref(ref_folder).snapshot
    except (OSError, ValidationError) as error:
        raise CorpusError(
            f"--snapshot-ref {ref_folder}: no valid snapshot.json ({error}); pass the folder "
            f"preprocess --snapshot-ref wrote, or leave it out to train on the newest snapshot"
        ) from error
    path = folder / name
    if not manifest_path(path).is_file():
        raise CorpusError(
            f"--data {folder}: {name} (named by --snapshot-ref) or its manifest is missing; "
            f"run preprocess into this folder again"
        )
    return path


def load_corpus(data: Path, snapshot_ref: Path | None = None) -> Corpus:
    """--data is a processed folder (the snapshot `snapshot_ref` names, else its newest complete one) or a .txt
    file (manifest beside it optional)."""
    data = Path(data)
    if data.is_dir() and snapshot_ref is not None:
        path = snapshot_named(data, snapshot_ref)
    elif data.is_dir():
        path = newest_snapshot(data)
    elif data.is_file() and data.suffix == ".txt":
        path = data
    else:
        raise CorpusError(f"--data {data}: not a folder of snapshots nor a .txt file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CorpusError(f"--data {path}: not UTF-8 text ({error}); pass a preprocess snapshot") from error
    if not text.strip():
        raise CorpusError(f"--data {path}: the text is empty; add documents with text and run preprocess again")
    manifest = None
    if manifest_path(path).is_file():
        try:
            manifest = SnapshotManifest.model_validate_json(manifest_path(path).read_bytes())
        except ValidationError as error:
            raise CorpusError(
                f"{manifest_path(path)}: not a snapshot manifest ({error}); run preprocess again"
            ) from error
    documents = split_documents(text, manifest)
    log.info(
        "training text %s: %d characters in %d document(s)%s",
        path,
        len(text),
        len(documents),
        "" if manifest else " (no manifest)",
    )
    return Corpus(path=path, manifest=manifest, documents=documents)
