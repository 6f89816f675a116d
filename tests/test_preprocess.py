"""Preprocess over a folder holding one of every kind of document: manifest content per case.

One real run (real PDFs, real worker processes) over the whole corpus; each test reads its result.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aks_jobs.pdf_text.build import BuildResult, Options, build_snapshot
from aks_jobs.pdf_text.extract import describe_content, is_pdf_header
from synthetic_data.pdfs import (
    ENGLISH_TEXT,
    GERMAN_TEXT,
    PORTUGUESE_TEXT,
    make_corrupt_pdf,
    make_damaged_page_pdf,
    make_encrypted_pdf,
    make_image_only_pdf,
    make_shifted_pdf,
    make_text_pdf,
    make_truncated_pdf,
)

REPORT_PAGES = [f"Section {letter} opens here. {ENGLISH_TEXT} Section {letter} ends here." for letter in "ABCD"]


@dataclass
class Run:
    inputs: Path
    result: BuildResult
    manifest: dict[str, Any]
    text: str

    def entry(self, name: str) -> dict[str, Any]:
        return next(entry for entry in self.manifest["documents"] if entry["name"] == name)


def run_build(inputs: Path, output: Path, **options: Any) -> Run:
    result = build_snapshot(inputs, output, options=Options(**options))
    assert result.snapshot is not None
    manifest = json.loads(result.snapshot.manifest.read_text(encoding="utf-8"))
    return Run(inputs, result, manifest, result.snapshot.text.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Run:
    inputs = tmp_path_factory.mktemp("inputs")
    make_text_pdf(inputs / "report.pdf", REPORT_PAGES, header="Quarterly Review", footer="Page {page} of {pages}")
    make_text_pdf(inputs / "sub" / "nested.PDF", ["A nested upload in a sub folder, found by the recursive search."])
    make_encrypted_pdf(inputs / "locked.pdf", [ENGLISH_TEXT], user_password="secret")
    make_encrypted_pdf(inputs / "open_encrypted.pdf", ["Encrypted with an empty password. " + ENGLISH_TEXT], "")
    make_encrypted_pdf(inputs / "aes_open.pdf", ["AES with an empty password. " + ENGLISH_TEXT], "", aes=True)
    make_encrypted_pdf(inputs / "aes_locked.pdf", [ENGLISH_TEXT], "secret", aes=True)
    (inputs / "empty.pdf").write_bytes(b"")
    (inputs / "webpage.pdf").write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    make_truncated_pdf(inputs / "cut_off.pdf", [ENGLISH_TEXT] * 3)
    make_corrupt_pdf(inputs / "damaged.pdf", [ENGLISH_TEXT] * 2)
    three_pages = [f"Part {letter}. {ENGLISH_TEXT}" for letter in "XYZ"]
    make_damaged_page_pdf(inputs / "bad_page.pdf", three_pages, page=2)
    make_damaged_page_pdf(inputs / "lost_page.pdf", three_pages, page=2, junk=b"!" * 30)
    make_text_pdf(inputs / "partly_scanned.pdf", ["Only the first page has a text layer. " + ENGLISH_TEXT, "", ""])
    make_shifted_pdf(inputs / "shifted.pdf", ["Every offset in this file is wrong. " + ENGLISH_TEXT])
    make_image_only_pdf(inputs / "scanned.pdf")
    make_text_pdf(inputs / "portuguese.pdf", [PORTUGUESE_TEXT, PORTUGUESE_TEXT])
    make_text_pdf(inputs / "german.pdf", [GERMAN_TEXT])
    (inputs / "notes.rtf").write_text("{\\rtf1 meeting notes}\n")  # .txt and .md are read: test_preprocess_text.py
    make_text_pdf(inputs / "renamed.bin", [ENGLISH_TEXT])
    return run_build(inputs, tmp_path_factory.mktemp("processed"))


def test_manifest_has_the_contract_fields(corpus: Run) -> None:
    manifest = corpus.manifest
    assert set(manifest) == {"snapshot", "created_utc", "documents_sha256", "documents", "totals", "kinds"}
    assert manifest["kinds"] == ["sub"]  # sub/nested.PDF: a folder under the inputs names a document kind
    assert re.fullmatch(r"combined_data_\d{8}_\d{6}\.txt", manifest["snapshot"])
    assert corpus.result.snapshot.manifest.name == manifest["snapshot"].removesuffix(".txt") + ".manifest.json"
    stamp = manifest["snapshot"][len("combined_data_") : -len(".txt")]
    created = manifest["created_utc"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created)
    assert stamp == created[:10].replace("-", "") + "_" + created[11:19].replace(":", "")
    fields = {
        "name",
        "sha256",
        "bytes",
        "pages",
        "chars",
        "status",
        "messages",
        "cached",
        "seconds",
        "engine",
        "ocr_pages",
        "records",
        "kind",
    }
    assert all(set(entry) == fields for entry in manifest["documents"])


def test_every_file_is_listed_once_sorted_by_name_with_its_real_size_and_hash(corpus: Run) -> None:
    names = [entry["name"] for entry in corpus.manifest["documents"]]
    on_disk = sorted(path.relative_to(corpus.inputs).as_posix() for path in corpus.inputs.rglob("*") if path.is_file())
    assert names == on_disk
    for entry in corpus.manifest["documents"]:
        data = (corpus.inputs / entry["name"]).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()


def test_documents_sha256_covers_the_sorted_name_hash_lines(corpus: Run) -> None:
    lines = sorted(f"{entry['name']}:{entry['sha256']}\n" for entry in corpus.manifest["documents"])
    assert corpus.manifest["documents_sha256"] == hashlib.sha256("".join(lines).encode()).hexdigest()


def test_totals_add_up(corpus: Run) -> None:
    documents = corpus.manifest["documents"]
    statuses = [entry["status"] for entry in documents]
    assert corpus.manifest["totals"] == {
        "documents": len(documents),
        "ok": statuses.count("ok"),
        "warning": statuses.count("warning"),
        "error": statuses.count("error"),
        "pages": sum(entry["pages"] for entry in documents),
        "chars": sum(entry["chars"] for entry in documents),
    }
    assert corpus.manifest["totals"]["ok"] == 5
    assert corpus.manifest["totals"]["warning"] == 5


@pytest.mark.parametrize(
    ("name", "status", "phrases"),
    [
        ("report.pdf", "ok", []),
        ("sub/nested.PDF", "ok", []),
        ("open_encrypted.pdf", "ok", ["empty user password", "extracted normally"]),
        ("locked.pdf", "error", ["encrypted with a password", "upload a copy without password"]),
        ("aes_open.pdf", "ok", ["empty user password", "extracted normally"]),
        ("aes_locked.pdf", "error", ["encrypted with a password", "upload a copy without password"]),
        ("empty.pdf", "error", ["empty file (0 bytes)", "upload the PDF again"]),
        ("webpage.pdf", "error", ["not a PDF despite the .pdf name", "HTML page", "save or export it as PDF"]),
        ("cut_off.pdf", "error", ["truncated", "%%EOF", "upload the complete file again"]),
        ("damaged.pdf", "error", ["corrupt PDF", "no page gave text", "save or export it as a new PDF"]),
        ("bad_page.pdf", "warning", ["could not read the text of page(s) 2 of 3", "other pages were extracted"]),
        ("lost_page.pdf", "warning", ["pypdf repaired problems", "page(s) 2 came out without text"]),
        ("shifted.pdf", "ok", []),  # pdfium reads it without a word; pypdf reported repairs
        # With Tesseract installed (make test's set-up; the job image); without it: test_preprocess_ocr.py.
        ("partly_scanned.pdf", "warning", ["2 of 3 pages have no text (page(s) 2, 3)", "OCR found no legible text"]),
        ("scanned.pdf", "error", ["no extractable text", "even with OCR", "drawings or photos", "rescan it"]),
        ("portuguese.pdf", "warning", ["mostly not English", "GPT-2 is an English model", "The text is kept"]),
        ("german.pdf", "warning", ["mostly not English"]),
        ("notes.rtf", "error", ["not a document this step reads", "an RTF document", "convert it to PDF"]),
        ("renamed.bin", "error", ["is a PDF but its name does not end in .pdf", "rename it"]),
    ],
)
def test_each_case_gets_its_status_and_an_actionable_message(
    corpus: Run, name: str, status: str, phrases: list[str]
) -> None:
    entry = corpus.entry(name)
    assert entry["status"] == status, entry
    joined = " ".join(entry["messages"])
    for phrase in phrases:
        assert phrase in joined, (phrase, entry["messages"])
    if status == "ok" and not phrases:
        assert entry["messages"] == []
    if status == "error":
        assert entry["chars"] == 0 and entry["messages"]


def test_page_counts_are_recorded(corpus: Run) -> None:
    assert corpus.entry("report.pdf")["pages"] == 4
    assert corpus.entry("scanned.pdf")["pages"] == 2
    assert corpus.entry("portuguese.pdf")["pages"] == 2
    assert corpus.entry("empty.pdf")["pages"] == 0


def test_broken_documents_do_not_stop_the_good_ones(corpus: Run) -> None:
    markers = (
        "Section A opens here.",
        "Section D opens here.",
        "A nested upload",
        "Encrypted with an empty",
        "AES with an empty",
        "Every offset in this file is wrong.",
    )
    for marker in markers:
        assert marker in corpus.text


def test_a_damaged_page_loses_only_that_page(corpus: Run) -> None:
    bad_page = corpus.text.split("\n\n")[1]
    assert "Part X." in bad_page and "Part Z." in bad_page and "Part Y." not in bad_page


def test_snapshot_is_the_documents_texts_in_name_order_separated_by_a_blank_line(corpus: Run) -> None:
    with_text = [entry for entry in corpus.manifest["documents"] if entry["chars"]]
    assert [entry["name"] for entry in with_text] == [
        "aes_open.pdf",
        "bad_page.pdf",
        "german.pdf",
        "lost_page.pdf",
        "open_encrypted.pdf",
        "partly_scanned.pdf",
        "portuguese.pdf",
        "report.pdf",
        "shifted.pdf",
        "sub/nested.PDF",
    ]
    pieces = corpus.text.removesuffix("\n").split("\n\n")
    assert [len(piece) for piece in pieces] == [entry["chars"] for entry in with_text]
    assert len(corpus.text) == sum(entry["chars"] for entry in with_text) + 2 * (len(with_text) - 1) + 1


def test_non_english_text_is_kept(corpus: Run) -> None:
    assert "A comissão reuniu-se na terça-feira" in corpus.text
    assert "Der Ausschuss trat am Dienstag zusammen" in corpus.text


def test_headers_and_page_numbers_are_removed_and_paragraph_text_is_contiguous(corpus: Run) -> None:
    assert "Quarterly Review" not in corpus.text
    assert not re.search(r"Page \d of 4", corpus.text)
    report = corpus.text.split("\n\n")[7]
    assert report.startswith("Section A opens here. The committee met on Tuesday")
    assert report.endswith("share it with everyone by Friday. Section D ends here.")
    assert report.index("Section A") < report.index("Section B") < report.index("Section C") < report.index("Section D")


def test_text_is_clean(corpus: Run) -> None:
    assert "  " not in corpus.text
    assert "\n\n\n" not in corpus.text
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", corpus.text)


def test_first_run_extracted_everything_and_cached_nothing(corpus: Run) -> None:
    assert not any(entry["cached"] for entry in corpus.manifest["documents"])
    pdf_names = [entry["name"] for entry in corpus.manifest["documents"] if entry["name"].lower().endswith(".pdf")]
    assert corpus.result.extracted == len(pdf_names)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"PK\x03\x04rest-of-a-docx", "Office document (.docx"),
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"\xff\xd8\xff\xe0JFIF", "a JPEG image"),
        (b"  <!DOCTYPE html><html>", "an HTML page"),
        ("Résumé, plain UTF-8 text cut mid-character: é".encode()[:-1], "plain text"),
        (b"\x00\x01\x02\x03binary", "binary data"),
    ],
)
def test_a_non_pdf_is_described_by_what_it_looks_like(head: bytes, kind: str) -> None:
    assert kind in describe_content(head)
    assert not is_pdf_header(head)


def test_a_pdf_header_may_follow_some_junk() -> None:
    assert is_pdf_header(b"\xef\xbb\xbf junk \n%PDF-1.7\n")
    assert not is_pdf_header(b"x" * 1024 + b"%PDF-1.7")
