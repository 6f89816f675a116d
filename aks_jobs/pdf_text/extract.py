"""Read one PDF file: the raw text of each page, or a clear reason why it cannot be read.

pdfium reads first (10x faster or more); pypdf reads what pdfium cannot open (e.g. encryption pdfium
refuses) and documents where pdfium found no text, so no document gives less text than pypdf alone.
Runs inside an isolated worker process (see isolate.py), so it may be slow, memory hungry or crash on a
hostile file; everything here is about turning the engines' behaviour into messages a person can act on.
"""

from __future__ import annotations

import codecs
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError

from aks_jobs.pdf_text.ocr import ocr_pages, tesseract
from aks_jobs.pdf_text.pages import PdfPages
from aks_jobs.pdf_text.pdfium_pages import PdfiumCannotOpen, read_with_pdfium

# The PDF header may follow some junk, but must start within the first 1024 bytes (PDF 32000-1 annex H).
HEADER_WINDOW = 1024
# pypdf looks for %%EOF near the end; a file without one there was cut off.
TRAILER_WINDOW = 1024

_SIGNATURES = [
    (b"PK\x03\x04", "a ZIP archive or Office document (.docx, .xlsx, .pptx)"),
    (b"\xd0\xcf\x11\xe0", "an old Office document (.doc, .xls, .ppt)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"{\\rtf", "an RTF document"),
    (b"\x1f\x8b", "a gzip archive"),
]


class UnreadablePdf(Exception):
    """The file cannot be read at all; str(exc) says what happened and what to do."""


def is_pdf_header(head: bytes) -> bool:
    return b"%PDF-" in head[:HEADER_WINDOW]


def describe_content(head: bytes) -> str:
    """What a non-PDF file most likely is, from its first bytes, for the error message."""
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    start = head.lstrip()[:64].lower()
    if start.startswith((b"<!doctype html", b"<html")):
        return "an HTML page (often a download or login page saved by mistake)"
    if start.startswith(b"<?xml"):
        return "an XML document"
    try:
        # Incremental: a character cut in two at the end of `head` is not evidence of binary data.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "binary data of an unknown type"
    return "binary data of an unknown type" if b"\x00" in head else "plain text"


@contextmanager
def _pypdf_warnings() -> Iterator[list[str]]:
    # pypdf reports repairs through logging; collect them for this document instead of letting them
    # reach the job log with no document name attached.
    collected: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            collected.append(record.getMessage())

    logger = logging.getLogger("pypdf")
    handler, propagate = Collect(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield collected
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _check_is_pdf(data: bytes) -> None:
    if not data:
        raise UnreadablePdf(
            "empty file (0 bytes): the upload did not finish or the source was empty; upload the PDF again."
        )
    if not is_pdf_header(data):
        raise UnreadablePdf(
            f"not a PDF despite the .pdf name: it does not start with '%PDF-' and looks like "
            f"{describe_content(data[:HEADER_WINDOW])}; save or export it as PDF and upload that instead."
        )


def _open(data: bytes) -> tuple[PdfReader, list[str]]:
    try:
        reader = PdfReader(io.BytesIO(data))
        # PdfReader already tried the empty password; ask again explicitly so the outcome is ours.
        decrypted = reader.decrypt("") if reader.is_encrypted else None
    except MemoryError:
        raise
    except DependencyError as exc:
        raise UnreadablePdf(
            f"needs a missing library to decrypt it ({exc}); install 'cryptography' in the job image."
        ) from exc
    except Exception as exc:
        # Broken files surface as many exception types besides pypdf's own (see pypdf.errors).
        raise UnreadablePdf(_unreadable_message(data, exc)) from exc
    if decrypted == PasswordType.NOT_DECRYPTED:
        raise UnreadablePdf(
            "encrypted with a password (the empty password does not open it): upload a copy without "
            "password protection, e.g. saved or printed to PDF without a password."
        )
    if decrypted is None:
        return reader, []
    return reader, ["encrypted with an empty user password: opened without one and extracted normally."]


def _unreadable_message(data: bytes, exc: Exception) -> str:
    reason = f"{type(exc).__name__}: {exc}"
    if b"%%EOF" not in data[-TRAILER_WINDOW:]:
        return (
            f"truncated: the file ends before the PDF end marker (%%EOF), so pypdf cannot read it ({reason}); "
            "the upload was probably cut off, upload the complete file again."
        )
    return (
        f"corrupt PDF: pypdf cannot read it ({reason}); open it in a PDF viewer, save or export it as a "
        "new PDF and upload that."
    )


def read_pdf_pages(path: Path, pdfium: bool = True) -> PdfPages:
    """Text of every page of the PDF at `path`; raises UnreadablePdf with an actionable message.
    pdfium=False reads with pypdf alone (after pdfium crashed on this file)."""
    data = path.read_bytes()
    _check_is_pdf(data)
    if not pdfium:
        return read_with_pypdf(data)
    try:
        pages = read_with_pdfium(data)
    except PdfiumCannotOpen as exc:
        pages = read_with_pypdf(data)  # its errors are the ones a person can act on
        pages.notes.append(f"read with pypdf: pdfium could not open it ({exc}).")
        return pages
    empty = {number for number, text in enumerate(pages.texts, start=1) if not text.strip()}
    if empty:
        _fill_from_pypdf(data, pages, empty)
        _fill_by_ocr(data, pages)
    return pages


def _fill_by_ocr(data: bytes, pages: PdfPages) -> None:
    """Pages still without text (and not broken) read by Tesseract from pdfium's rendering, if installed."""
    binary = tesseract()
    empty = [n for n, text in enumerate(pages.texts, start=1) if not text.strip() and n not in pages.failed_pages]
    if binary is None or not empty:
        return
    pages.ocr_tried = True
    texts, errors = ocr_pages(data, empty, binary)
    for number, text in texts.items():
        if text.strip():
            pages.texts[number - 1] = text
            pages.ocr_pages.append(number)
    pages.ocr_failed = errors


def _fill_from_pypdf(data: bytes, pages: PdfPages, numbers: set[int]) -> None:
    """Pages pdfium found empty, read again by pypdf: its text where it finds some, and its diagnosis
    (failed pages, repairs) where it does not. Rare for text PDFs; scans pay one cheap pypdf pass."""
    try:
        again = read_with_pypdf(data, only=numbers)
    except UnreadablePdf:
        return
    for number in sorted(numbers):
        if again.texts[number - 1].strip():
            pages.texts[number - 1] = again.texts[number - 1]
            pages.engine = "pdfium+pypdf"
        elif number in again.failed_pages:
            pages.failed_pages[number] = again.failed_pages[number]
    pages.repairs = again.repairs


def read_with_pypdf(data: bytes, only: set[int] | None = None) -> PdfPages:
    """Text of every page (or of the 1-based page numbers in `only`; the others stay "") read by pypdf:
    pure Python, slower than pdfium, but it opens some files pdfium refuses."""
    with _pypdf_warnings() as warnings:
        reader, notes = _open(data)
        try:
            pages = list(reader.pages)
        except MemoryError:
            raise
        except Exception as exc:
            # The page tree itself is broken: there is nothing to extract page by page.
            raise UnreadablePdf(_unreadable_message(data, exc)) from exc
        result = PdfPages(texts=[], notes=notes, engine="pypdf")
        for number, page in enumerate(pages, start=1):
            if only is not None and number not in only:
                result.texts.append("")
                continue
            try:
                result.texts.append(page.extract_text())
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad page must not lose the others
                result.texts.append("")
                result.failed_pages[number] = f"{type(exc).__name__}: {exc}"
    result.repairs = list(dict.fromkeys(warning.rstrip(".") for warning in warnings))
    return result
