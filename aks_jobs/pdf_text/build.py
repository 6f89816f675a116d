"""A folder of uploaded documents (PDFs, .txt/.md text) -> one snapshot of their text plus its manifest.

Documents already extracted by the same code are taken from the cache (by sha256), the rest are
extracted in isolated workers; every document, readable or not, gets a manifest entry.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from aks_jobs.capacity import choose_workers
from aks_jobs.pdf_text.cache import ExtractionCache
from aks_jobs.pdf_text.document import Extraction
from aks_jobs.pdf_text.extract import describe_content, is_pdf_header
from aks_jobs.pdf_text.inputs import InputFile, list_inputs
from aks_jobs.pdf_text.isolate import Limits, Task, extract_isolated
from aks_jobs.pdf_text.manifest import DocumentEntry, build_manifest, combined_text
from aks_jobs.pdf_text.snapshot import Snapshot, write_snapshot
from pipeline_contracts.blob_layout import CACHE_FOLDER
from pipeline_contracts.document_kinds import KindError, kind_of, wrap, wrap_records

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    timeout_s: float = 120.0
    memory_mb: int = 2048
    workers: int = 0  # 0 = one per available CPU
    # Text limits, applied when the snapshot is built (so changing them needs no new extraction). A PDF's
    # text rarely exceeds a few characters per byte of file (compressed streams); far more is a
    # decompression bomb or a generator's artefact (a 14 KiB file gave 32 MiB of text).
    max_document_chars: int = 10_000_000
    max_corpus_chars: int = 200_000_000
    max_chars_per_byte: float = 100.0


@dataclass
class BuildResult:
    entries: list[DocumentEntry]
    snapshot: Snapshot | None  # None when no document gave text: nothing was written
    workers: int
    seconds: float
    extracted: int  # documents extracted in this run (the rest came from the cache or were skipped)

    @property
    def cache_hits(self) -> int:
        return sum(entry.cached for entry in self.entries)

    @property
    def has_text(self) -> bool:
        return any(entry.chars for entry in self.entries)


@dataclass
class _Resolved:
    extraction: Extraction
    cached: bool = False
    seconds: float = 0.0
    names: list[str] = field(default_factory=list)  # every document with this content, in name order
    pending: bool = False  # waiting for extraction in this run


def _not_extracted(item: InputFile) -> Extraction:
    """Why a file that is not a readable *.pdf gets no text."""
    if item.read_error:
        message = (
            f"could not read the file ({item.read_error}); check the input storage and run again, or upload "
            "the file again."
        )
    elif is_pdf_header(item.head):
        message = "this is a PDF but its name does not end in .pdf, so it was not extracted: rename it to *.pdf."
    else:
        message = (
            f"not a document this step reads (only *.pdf, *.txt, *.md, and *.jsonl/*.json instruction files are; "
            f"this looks like {describe_content(item.head)}): convert it to PDF or plain text and upload that, or "
            "remove it."
        )
    return Extraction.failed(message, cacheable=False)


class _Progress:
    """One log line per document as its result becomes known: name, status, pages, chars, time."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0

    def __call__(self, name: str, result: _Resolved) -> None:
        self.done += 1
        extraction = result.extraction
        source = "cached" if result.cached else f"{result.seconds:.2f} s"
        log.info(
            "[%d/%d] %s: %s, %d pages, %s chars, %s",
            self.done,
            self.total,
            name,
            extraction.status,
            extraction.pages,
            f"{len(extraction.text):,}",
            source,
        )


def _resolve(
    files: list[InputFile], cache: ExtractionCache, limits: Limits, progress: _Progress
) -> dict[str, _Resolved]:
    """Each file's result by name: known now (not a PDF, cached) or pending extraction.

    Files with the same content share one _Resolved, so identical uploads are extracted once.
    """
    by_sha: dict[str, _Resolved] = {}
    resolved: dict[str, _Resolved] = {}
    for item in files:
        if item.read_error or item.kind is None:
            result = _Resolved(_not_extracted(item), names=[item.name])
        elif item.extract_key in by_sha:
            result = by_sha[item.extract_key]
            result.names.append(item.name)
        else:
            lookup_started = time.perf_counter()
            cached = cache.get(item.extract_key, limits)
            if cached is None:
                result = _Resolved(Extraction(), names=[item.name], pending=True)
            else:
                seconds = time.perf_counter() - lookup_started
                result = _Resolved(cached, cached=True, seconds=seconds, names=[item.name])
            by_sha[item.extract_key] = result
        resolved[item.name] = result
        if not result.pending:  # pending ones are reported when their extraction ends
            progress(item.name, result)
    return resolved


def build_snapshot(
    input_dir: Path, output_dir: Path, cache_dir: Path | None = None, options: Options = Options()
) -> BuildResult:
    started = time.perf_counter()
    cache_dir = cache_dir or output_dir / CACHE_FOLDER
    files = list_inputs(input_dir, exclude=(output_dir, cache_dir))
    cache = ExtractionCache(cache_dir)
    progress = _Progress(len(files))
    limits = Limits(options.timeout_s, options.memory_mb)
    resolved = _resolve(files, cache, limits, progress)

    # One task per distinct pending content, largest file first so a big one does not start last.
    pending: dict[str, InputFile] = {}
    for item in files:
        if resolved[item.name].pending:
            pending.setdefault(item.extract_key, item)
    largest_first = sorted(pending.values(), key=lambda item: -item.bytes)
    tasks = [Task(key=item.extract_key, path=item.path) for item in largest_first]
    workers = min(choose_workers(options.workers, options.memory_mb), max(1, len(tasks)))
    if tasks:
        log.info(
            "extracting %d document(s) with %d worker(s), each limited to %g s and %d MB",
            len(tasks),
            workers,
            options.timeout_s,
            options.memory_mb,
        )
    for outcome in extract_isolated(tasks, limits, workers):
        result = resolved[pending[outcome.task.key].name]
        result.extraction, result.seconds, result.pending = outcome.extraction, outcome.seconds, False
        cache.put(outcome.task.key, outcome.extraction, limits)
        for name in result.names:
            progress(name, result)

    entries, texts = _entries_and_texts(files, resolved, options)
    snapshot = None
    if texts:
        snapshot = write_snapshot(
            output_dir, combined_text(texts), lambda name, created: build_manifest(name, created, entries)
        )
        log.info("wrote %s and %s", snapshot.text, snapshot.manifest.name)
    return BuildResult(entries, snapshot, workers, time.perf_counter() - started, extracted=len(tasks))


def _within_limits(item: InputFile, text: str, corpus_chars: int, options: Options) -> tuple[str, str, str]:
    """(text kept, status it forces or "", message) for one document's text under the text limits."""
    if item.bytes and len(text) > options.max_chars_per_byte * item.bytes:
        return (
            "",
            "error",
            (
                f"its {len(text):,} characters of text come from a {item.bytes:,}-byte file "
                f"({len(text) / item.bytes:,.0f} per byte, over the limit of {options.max_chars_per_byte:g}: "
                "--max-chars-per-byte, app setting PREPROCESS_MAX_CHARS_PER_BYTE). Such expansion is a decompression "
                "bomb or a broken generator, so its text is left out; check the file, or raise the limit if the text "
                "is real."
            ),
        )
    status, message = "", ""
    if len(text) > options.max_document_chars:
        status, message = (
            "warning",
            (
                f"its text was cut to the first {options.max_document_chars:,} of {len(text):,} characters (limit "
                "per document: --max-document-chars, app setting PREPROCESS_MAX_DOCUMENT_CHARS); split the document "
                "or raise the limit to train on all of it."
            ),
        )
        text = text[: options.max_document_chars]
    if corpus_chars + len(text) > options.max_corpus_chars:
        return (
            "",
            "error",
            (
                f"left out: the snapshot already holds {corpus_chars:,} characters and this document's {len(text):,} "
                f"would pass the limit of {options.max_corpus_chars:,} (--max-corpus-chars, app setting "
                "PREPROCESS_MAX_CORPUS_CHARS); remove documents or raise the limit."
            ),
        )
    return text, status, message


def _kinds(files: list[InputFile]) -> tuple[dict[str, str | None], dict[str, str]]:
    """Each file's document kind (from its folder under the inputs), and why a folder cannot be one."""
    kinds, problems = {}, {}
    for item in files:
        try:
            kinds[item.name] = kind_of(item.name)
        except KindError as error:
            problems[item.name] = str(error)
    return kinds, problems


def _as_training_text(item: InputFile, kind: str | None, text: str) -> str:
    """A kind's document wrapped in its token; instruction files get the token on every record."""
    if not kind:
        return text
    return wrap_records(kind, text) if item.kind == "instructions" else wrap(kind, text)


def _entries_and_texts(
    files: list[InputFile], resolved: dict[str, _Resolved], options: Options
) -> tuple[list[DocumentEntry], list[str]]:
    """Manifest entries and snapshot texts in name order; identical files contribute their text once."""
    entries, texts, corpus_chars = [], [], 0
    kinds, kind_problems = _kinds(files)
    for item in files:
        result = resolved[item.name]
        extraction = result.extraction
        usable = [name for name in result.names if name not in kind_problems]
        first = bool(usable) and usable[0] == item.name
        messages = list(extraction.messages)
        status = extraction.status
        text = extraction.text if first else ""
        if item.name in kind_problems:
            status = "error"
            messages.append(kind_problems[item.name])
        if text:
            text, forced, message = _within_limits(item, text, corpus_chars, options)
            if forced:
                status = forced if forced == "error" or status == "ok" else status
                messages.append(message)
        if usable and not first and item.name not in kind_problems and extraction.text:
            status = "warning" if status == "ok" else status
            messages.append(
                f"same content as '{usable[0]}' (identical sha256): its text is in the snapshot once, "
                "under that name; remove one of the copies."
            )
        if text:
            text = _as_training_text(item, kinds.get(item.name), text)
            texts.append(text)
            corpus_chars += len(text)
        entries.append(
            DocumentEntry(
                name=item.name,
                sha256=item.sha256,
                bytes=item.bytes,
                pages=extraction.pages,
                chars=len(text),
                status=status,
                messages=messages,
                cached=result.cached,
                seconds=round(result.seconds if first else 0.0, 3),
                engine=extraction.engine,
                ocr_pages=extraction.ocr_pages,
                records=extraction.records,
                kind=kinds.get(item.name),
            )
        )
    return entries, texts
