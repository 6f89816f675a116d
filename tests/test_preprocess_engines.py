"""pdfium as the primary engine, pypdf as its fallback, and a crash in the C engine confined to its worker."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest

from aks_jobs.pdf_text import extract, isolate
from aks_jobs.pdf_text.build import Options, build_snapshot
from aks_jobs.pdf_text.document import process_pdf
from synthetic_data.pdfs import (
    ENGLISH_TEXT,
    GERMAN_TEXT,
    make_corrupt_pdf,
    make_damaged_page_pdf,
    make_encrypted_pdf,
    make_heavy_pdf,
    make_image_only_pdf,
    make_rootless_pdf,
    make_shifted_pdf,
    make_text_pdf,
    make_truncated_pdf,
)

THREE = [f"Part {letter}. {ENGLISH_TEXT}" for letter in "XYZ"]


def every_test_pdf(folder: Path) -> list[Path]:
    """One of each kind synthetic_data/pdfs.py makes."""
    return [
        make_text_pdf(folder / "report.pdf", THREE, header="Quarterly Review", footer="Page {page} of {pages}"),
        make_text_pdf(folder / "german.pdf", [GERMAN_TEXT]),
        make_encrypted_pdf(folder / "open_rc4.pdf", [ENGLISH_TEXT], ""),
        make_encrypted_pdf(folder / "open_aes.pdf", [ENGLISH_TEXT], "", aes=True),
        make_encrypted_pdf(folder / "locked.pdf", [ENGLISH_TEXT], "secret"),
        make_truncated_pdf(folder / "cut_off.pdf", [ENGLISH_TEXT] * 3),
        make_corrupt_pdf(folder / "damaged.pdf", [ENGLISH_TEXT] * 2),
        make_damaged_page_pdf(folder / "bad_page.pdf", THREE, page=2),
        make_damaged_page_pdf(folder / "lost_page.pdf", THREE, page=2, junk=b"!" * 30),
        make_shifted_pdf(folder / "shifted.pdf", [ENGLISH_TEXT]),
        make_rootless_pdf(folder / "rootless.pdf", [ENGLISH_TEXT]),
        make_image_only_pdf(folder / "scanned.pdf"),
        make_text_pdf(folder / "partly_scanned.pdf", [ENGLISH_TEXT, "", ""]),
        make_heavy_pdf(folder / "heavy.pdf", megabytes=0.2),
    ]


def words(text: str) -> Counter[str]:
    return Counter(re.findall(r"\w+", text))


def test_no_test_pdf_gives_less_text_than_pypdf_alone(tmp_path: Path) -> None:
    engines = Counter()
    for path in every_test_pdf(tmp_path):
        today, ours = process_pdf(path, pdfium=False), process_pdf(path)
        missing = words(today.text) - words(ours.text)
        assert not missing, f"{path.name}: pdfium-first loses {sorted(missing)[:10]} that pypdf extracts"
        assert ours.status != "error" or today.status == "error", (path.name, ours.messages)
        engines[ours.engine] += 1
    assert engines["pdfium"] >= 8 and engines["pypdf"] >= 1  # the fast engine does the bulk


def test_the_manifest_names_the_engine_and_pypdf_reads_what_pdfium_cannot_open(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    make_text_pdf(inputs / "plain.pdf", [ENGLISH_TEXT])
    make_rootless_pdf(inputs / "rootless.pdf", ["A trailer without its root. " + ENGLISH_TEXT])
    make_damaged_page_pdf(inputs / "bad_page.pdf", THREE, page=2)
    result = build_snapshot(inputs, tmp_path / "out", options=Options(workers=1))
    entries = {entry.name: entry for entry in result.entries}
    assert entries["plain.pdf"].engine == "pdfium"
    rootless = entries["rootless.pdf"]
    assert rootless.engine == "pypdf" and rootless.chars > 0
    assert any("pdfium could not open it" in message for message in rootless.messages)
    assert "A trailer without its root." in result.snapshot.text.read_text()
    # pdfium leaves the broken page empty without a word; pypdf's diagnosis of it reaches the manifest.
    assert entries["bad_page.pdf"].status == "warning"
    assert "could not read the text of page(s) 2 of 3" in entries["bad_page.pdf"].messages[0]


def _abort_on_marker(data: bytes) -> None:
    if b"CRASH-ME" in data:
        os.abort()  # what a fault in pdfium's C++ does to its process


@pytest.fixture
def crash_in_pdfium(monkeypatch: pytest.MonkeyPatch) -> None:
    """pdfium really aborting its worker process on one document (workers are forked: they inherit this)."""
    real = extract.read_with_pdfium

    def aborting(data: bytes):
        _abort_on_marker(data)
        return real(data)

    monkeypatch.setattr(extract, "read_with_pdfium", aborting)


def _inputs(folder: Path) -> Path:
    make_text_pdf(folder / "a_before.pdf", ["Before the crash. " + ENGLISH_TEXT])
    crash = make_text_pdf(folder / "crash.pdf", ["This document kills the engine. " + ENGLISH_TEXT])
    crash.write_bytes(crash.read_bytes() + b"%CRASH-ME\n")  # a comment after %%EOF: any reader ignores it
    make_text_pdf(folder / "z_after.pdf", ["After the crash. " + ENGLISH_TEXT])
    return folder


def test_a_pdfium_crash_kills_only_its_worker_and_pypdf_reads_that_document(tmp_path, crash_in_pdfium) -> None:
    result = build_snapshot(_inputs(tmp_path / "inputs"), tmp_path / "out", options=Options(workers=1))
    entries = {entry.name: entry for entry in result.entries}
    crashed = entries["crash.pdf"]
    assert crashed.status == "warning" and crashed.engine == "pypdf"
    assert "pdfium failed on it first" in crashed.messages[-1] and "signal SIGABRT" in crashed.messages[-1]
    text = result.snapshot.text.read_text()
    assert "This document kills the engine." in text
    assert entries["a_before.pdf"].status == entries["z_after.pdf"].status == "ok"
    assert entries["a_before.pdf"].engine == entries["z_after.pdf"].engine == "pdfium"
    assert "Before the crash." in text and "After the crash." in text
    # A crash is not cached: the next run tries pdfium again.
    assert not list((tmp_path / "out" / "cache").glob(f"{crashed.sha256}*"))


def test_a_document_that_crashes_every_engine_gets_a_clear_error_and_the_others_carry_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = isolate.process_document

    def aborting(path: Path, pdfium: bool = True):
        _abort_on_marker(path.read_bytes())
        return real(path, pdfium)

    monkeypatch.setattr(isolate, "process_document", aborting)
    result = build_snapshot(_inputs(tmp_path / "inputs"), tmp_path / "out", options=Options(workers=2))
    entries = {entry.name: entry for entry in result.entries}
    crashed = entries["crash.pdf"]
    assert crashed.status == "error" and crashed.chars == 0
    assert "the extraction process crashed (signal SIGABRT) while pypdf read it" in crashed.messages[0]
    assert "memory limit of 2048 MB" in crashed.messages[0]  # what kills pure-Python pypdf
    assert "other documents are not affected" in crashed.messages[0]
    assert entries["a_before.pdf"].status == entries["z_after.pdf"].status == "ok"
    assert "Before the crash." in result.snapshot.text.read_text()


def test_the_memory_limit_stays_the_reason_when_pypdf_then_dies_another_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under a tight limit pdfium's worker can run out of memory and pypdf's retry then abort: the
    # interpreter aborts when memory runs out while it raises MemoryError (seen in CI at --memory-mb 1).
    real = isolate.process_document

    def memory_then_abort(path: Path, pdfium: bool = True):
        if b"CRASH-ME" in path.read_bytes():
            if pdfium:
                raise MemoryError
            os.abort()
        return real(path, pdfium)

    monkeypatch.setattr(isolate, "process_document", memory_then_abort)
    result = build_snapshot(_inputs(tmp_path / "inputs"), tmp_path / "out", options=Options(workers=1))
    entries = {entry.name: entry for entry in result.entries}
    crashed = entries["crash.pdf"]
    assert crashed.status == "error"
    assert "memory limit of 2048 MB" in crashed.messages[0]
    assert "pypdf failed on it too" in crashed.messages[-1] and "signal SIGABRT" in crashed.messages[-1]
    assert entries["a_before.pdf"].status == entries["z_after.pdf"].status == "ok"
