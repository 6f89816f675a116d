"""Earlier extraction results, one JSON file per document content: CACHE/<sha256>.json, or
CACHE/<sha256>.<limits>.json for an outcome of the time or memory limit (a timeout), valid only for
those limits: a document that timed out is not extracted again (for the full timeout) every run,
and raising the limit extracts it again.

An entry is valid only for the extraction code that wrote it: its `version` is a hash of pypdf's and
pdfium's versions, Tesseract's (or its absence) and the source of the modules that shape the text, so changing
the cleaner invalidates every entry without anyone remembering to bump a number.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from functools import cache
from pathlib import Path

import pypdf
import pypdfium2.version

from aks_jobs.lm import prompt_format
from aks_jobs.pdf_text import clean, document, extract, instructions, language, ocr, pages, pdfium_pages, text_file
from aks_jobs.pdf_text.document import Extraction
from aks_jobs.pdf_text.isolate import Limits
from pipeline_contracts.blob_layout import cache_entry

log = logging.getLogger(__name__)
_TEXT_SHAPING_MODULES = (
    extract,
    pdfium_pages,
    ocr,
    text_file,
    instructions,
    prompt_format,
    pages,
    clean,
    language,
    document,
)


@cache
def extraction_version() -> str:
    engines = (
        f"pypdf {pypdf.__version__}\npypdfium2 {pypdfium2.version.PYPDFIUM_INFO} {pypdfium2.version.PDFIUM_INFO}\n"
    )
    # With or without Tesseract (and which) gives different text for scans: installing it re-extracts them.
    engines += f"tesseract {ocr.tesseract_version()}\n"
    digest = hashlib.sha256(engines.encode())
    for module in _TEXT_SHAPING_MODULES:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


class ExtractionCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, sha256: str, limits: Limits | None = None) -> Path:
        return self.folder / cache_entry(sha256, limits.key if limits else None)

    def get(self, sha256: str, limits: Limits | None = None) -> Extraction | None:
        """The cached result for this content (or its outcome under these limits), else None."""
        found = self._read(sha256, self._path(sha256))
        return found if found is not None or limits is None else self._read(sha256, self._path(sha256, limits))

    def _read(self, sha256: str, path: Path) -> Extraction | None:
        """The entry at `path`, or None (missing, written by other code, or unreadable)."""
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cache entry %s (%s); extracting again", path, exc)
            return None
        if entry.get("version") != extraction_version() or entry.get("sha256") != sha256:
            return None
        try:
            return Extraction.from_json(entry["extraction"])
        except (KeyError, TypeError) as exc:
            log.warning("ignoring malformed cache entry %s (%s); extracting again", path, exc)
            return None

    def put(self, sha256: str, extraction: Extraction, limits: Limits | None = None) -> None:
        """Store a result; written to a temporary name then renamed, so readers never see half a file."""
        if not extraction.cacheable or (extraction.limited and limits is None):
            return
        entry = {"version": extraction_version(), "sha256": sha256, "extraction": extraction.to_json()}
        path = self._path(sha256, limits if extraction.limited else None)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(entry, ensure_ascii=False), encoding="utf-8")
            os.replace(temporary, path)
        except OSError as exc:  # a cache that cannot be written costs speed next time, not this run
            log.warning("could not write cache entry %s (%s); the next run will extract it again", path, exc)
