"""One document (PDF, or .txt/.md) -> its cleaned text, page count, status and the messages that explain it.

This is the unit of work that runs in an isolated worker and whose result is cached by sha256.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from aks_jobs.pdf_text.clean import clean_document
from aks_jobs.pdf_text.extract import UnreadablePdf, read_pdf_pages
from aks_jobs.pdf_text.instructions import MAX_LISTED_RECORDS, is_instruction_name, parse_instructions
from aks_jobs.pdf_text.language import check_english
from aks_jobs.pdf_text.pages import PdfPages
from aks_jobs.pdf_text.text_file import NotText, decode_text, is_text_name

Status = Literal["ok", "warning", "error"]
_SEVERITY = {"ok": 0, "warning": 1, "error": 2}
# Warn when at least this share of pages has no text: likely scanned pages whose content is lost.
EMPTY_PAGE_SHARE = 0.5


@dataclass
class Extraction:
    """What one PDF gave. `cacheable` is False for outcomes that depend on this run (a bug, a kill by the
    system); `limited` marks outcomes of the time or memory limit, cached only for those limits."""

    status: Status = "ok"
    pages: int = 0
    text: str = ""
    messages: list[str] = field(default_factory=list)
    cacheable: bool = True
    limited: bool = False
    engine: str = ""  # "pdfium" or "pypdf": which one read the text ("" when none did)
    ocr_pages: list[int] = field(default_factory=list)  # 1-based pages whose text Tesseract read
    records: int = 0  # instruction files: the records that became training examples

    def note(self, message: str) -> None:
        self.messages.append(message)

    def warn(self, message: str) -> None:
        self._raise_status("warning")
        self.messages.append(message)

    def fail(self, message: str) -> None:
        self._raise_status("error")
        self.messages.append(message)

    def _raise_status(self, status: Status) -> None:
        if _SEVERITY[status] > _SEVERITY[self.status]:
            self.status = status

    @classmethod
    def failed(cls, message: str, *, cacheable: bool) -> Extraction:
        return cls(status="error", messages=[message], cacheable=cacheable)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Extraction:
        return cls(**data)


_NO_TESSERACT = "Tesseract is not installed where preprocessing ran; the job image has it"

# Enough of pypdf's repair notes to explain a document without flooding the manifest.
MAX_REPAIRS_SHOWN = 3
# Page lists in messages stop here; a 500-page scan needs no 500 numbers to be understood.
MAX_LISTED_PAGES = 10


def _page_list(numbers: list[int]) -> str:
    listed = ", ".join(map(str, numbers[:MAX_LISTED_PAGES]))
    return listed + (", ..." if len(numbers) > MAX_LISTED_PAGES else "")


def process_document(path: Path, pdfium: bool = True) -> Extraction:
    """Extract, clean and check one uploaded document, by the kind its name says."""
    if is_instruction_name(path.name):
        return process_instructions(path)
    return process_text(path) if is_text_name(path.name) else process_pdf(path, pdfium)


def _read_text(path: Path) -> tuple[str, str] | Extraction:
    """(text, encoding) of a text-based upload, or the Extraction saying why there is none."""
    data = path.read_bytes()
    if not data:
        return Extraction.failed(
            "empty file (0 bytes): the upload did not finish or the source was empty; upload the file again.",
            cacheable=True,
        )
    try:
        return decode_text(data)
    except NotText as exc:
        return Extraction.failed(str(exc), cacheable=True)


def process_instructions(path: Path) -> Extraction:
    """A .jsonl/.json file of instruction records: each good record one training example, bad ones listed."""
    read = _read_text(path)
    if isinstance(read, Extraction):
        return read
    try:
        parsed = parse_instructions(read[0], json_lines=path.name.lower().endswith(".jsonl"))
    except json.JSONDecodeError as exc:
        return Extraction.failed(
            f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): a .json upload holds a list of "
            "records, a .jsonl upload one JSON record per line; fix the file and upload it again.",
            cacheable=True,
        )
    result = Extraction(text="".join(parsed.examples), engine="instructions", records=len(parsed.examples))
    if parsed.bad:
        listed = "; ".join(f"line {line}: {reason}" for line, reason in parsed.bad[:MAX_LISTED_RECORDS])
        more = f" (+{len(parsed.bad) - MAX_LISTED_RECORDS} more)" if len(parsed.bad) > MAX_LISTED_RECORDS else ""
        summary = f"{len(parsed.bad)} of {len(parsed.bad) + len(parsed.examples)} record(s) left out: {listed}{more}"
        if parsed.examples:
            result.warn(f"{summary}. The other records are used; fix these lines to train on them too.")
        else:
            result.fail(f"{summary}. No record is usable; fix the file and upload it again.")
    elif not parsed.examples:
        result.fail("no records: the file holds no instruction records; add some and upload it again.")
    return result


def process_text(path: Path) -> Extraction:
    """A .txt/.md file: decoded (encoding detected), cleaned like PDF text, checked for language."""
    read = _read_text(path)
    if isinstance(read, Extraction):
        return read
    text, encoding = read
    result = Extraction(text=clean_document([text]), engine="text")
    if encoding not in ("utf-8", "utf-8-sig", "ascii"):
        result.note(f"decoded as {encoding} (detected; not UTF-8); if characters look wrong, save it as UTF-8.")
    if not result.text:
        result.fail("no text: the file holds only whitespace or invisible characters; check its content.")
    else:
        _check_language(result)
    return result


def process_pdf(path: Path, pdfium: bool = True) -> Extraction:
    """Extract, clean and check one PDF. Never raises for a bad file (MemoryError excepted)."""
    try:
        raw = read_pdf_pages(path, pdfium)
    except UnreadablePdf as exc:
        return Extraction.failed(str(exc), cacheable=True)
    except MemoryError:
        raise  # the worker reports it as a memory-limit failure
    except Exception as exc:  # noqa: BLE001 - a bug of ours or pypdf's must not stop the other documents
        return Extraction.failed(
            f"unexpected error while extracting ({type(exc).__name__}: {exc}); this is a bug, please report "
            "it with the file. The other documents are not affected.",
            cacheable=False,
        )
    result = Extraction(
        pages=len(raw.texts), text=clean_document(raw.texts), engine=raw.engine, ocr_pages=raw.ocr_pages
    )
    for note in raw.notes:
        result.note(note)
    if raw.ocr_pages:
        result.note(
            f"page(s) {_page_list(raw.ocr_pages)} have no text layer: their text was read by OCR (Tesseract), "
            "which can misread words; a PDF with a text layer gives exact text."
        )
    if raw.ocr_failed:
        failed = sorted(raw.ocr_failed)
        result.warn(f"OCR failed on page(s) {_page_list(failed)} ({raw.ocr_failed[failed[0]]}); their text is missing.")
    if result.pages == 0:
        result.fail("the PDF has no pages, so there is nothing to extract; check that it opens in a PDF viewer.")
    elif not result.text:
        result.fail(_no_text_message(raw))
    else:
        _check_content(raw, result)
    return result


def _failed_pages(raw: PdfPages) -> str:
    failed = sorted(raw.failed_pages)
    return f"page(s) {_page_list(failed)} of {len(raw.texts)} ({raw.failed_pages[failed[0]]})"


def _repairs(raw: PdfPages) -> str:
    shown = "; ".join(raw.repairs[:MAX_REPAIRS_SHOWN])
    more = f" (+{len(raw.repairs) - MAX_REPAIRS_SHOWN} more)" if len(raw.repairs) > MAX_REPAIRS_SHOWN else ""
    return f"pypdf repaired problems while reading ({shown}{more})"


def _no_text_message(raw: PdfPages) -> str:
    if raw.failed_pages or raw.repairs:
        cause = f"could not read the text of {_failed_pages(raw)}" if raw.failed_pages else _repairs(raw)
        return (
            f"corrupt PDF: {cause} and no page gave text; open it in a PDF viewer, save or export it as a new "
            "PDF and upload that."
        )
    if raw.ocr_tried:
        return (
            f"no extractable text on any of its {len(raw.texts)} page(s), even with OCR: its pages hold no legible "
            "text (blank, drawings or photos, or a scan too faint or small to read); check the PDF, rescan it at "
            "300 dpi or more, or export it with a text layer."
        )
    return (
        f"no extractable text on any of its {len(raw.texts)} page(s): it is probably scanned or image-only, "
        f"and OCR is not available ({_NO_TESSERACT}); run OCR on it (or export it with a text layer) and upload it "
        "again."
    )


def _check_content(raw: PdfPages, result: Extraction) -> None:
    """Warnings for a document that gave text: missing pages, damage, language."""
    if raw.failed_pages:
        result.warn(
            f"could not read the text of {_failed_pages(raw)}; the other pages were extracted. Re-export the "
            "PDF to recover the missing pages."
        )
    # Pages without text that did not fail outright: scanned, or emptied by damage pypdf repaired.
    unexplained = [
        number for number, text in enumerate(raw.texts, start=1) if not text.strip() and number not in raw.failed_pages
    ]
    if raw.repairs and unexplained:
        # A damaged file with text-less pages: those pages probably lost their text to the damage.
        result.warn(
            f"{_repairs(raw)} and page(s) {_page_list(unexplained)} came out without text, so their text may "
            "be lost; re-export the PDF to recover it."
        )
    elif raw.repairs:
        result.note(f"{_repairs(raw)}.")
    elif unexplained and len(unexplained) >= EMPTY_PAGE_SHARE * len(raw.texts):
        why = "OCR found no legible text on them either" if raw.ocr_tried else f"OCR is not available ({_NO_TESSERACT})"
        result.warn(
            f"{len(unexplained)} of {len(raw.texts)} pages have no text (page(s) {_page_list(unexplained)}): "
            f"scanned images, probably; {why}, so their content is missing from the snapshot."
        )
    _check_language(result)


def _check_language(result: Extraction) -> None:
    language = check_english(result.text)
    if not language.mostly_english:
        result.warn(
            f"text is mostly not English (only {language.english_share:.0%} of its {language.words} words are "
            "common English words such as 'the', 'and', 'of'; English text has 35% or more): GPT-2 is an English "
            "model and will learn little from it. The text is kept; remove the upload if it should not be trained on."
        )
