"""OCR of pages without a text layer: pdfium renders them, Tesseract (Debian's tesseract-ocr, installed by
`make test`'s set-up and in the job image) reads them, inside the isolated worker and its time limit."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from aks_jobs.pdf_text.build import Options, build_snapshot
from synthetic_data.pdfs import ENGLISH_TEXT, make_scanned_text_pdf, make_text_pdf

SENTENCE = ["The harbour master keeps the blue lantern", "in the third drawer of the oak desk."]


def _entries(result):
    return {entry.name: entry for entry in result.entries}


def test_an_image_only_pdf_is_read_by_ocr_into_the_snapshot(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    make_scanned_text_pdf(inputs / "scan.pdf", SENTENCE)
    make_text_pdf(inputs / "typed.pdf", [ENGLISH_TEXT])
    result = build_snapshot(inputs, tmp_path / "out", options=Options(workers=2))
    entries = _entries(result)
    scan = entries["scan.pdf"]
    assert scan.status == "ok" and scan.ocr_pages == [1] and scan.engine == "pdfium"
    assert any("read by OCR (Tesseract)" in message for message in scan.messages)
    assert entries["typed.pdf"].ocr_pages == []
    # Cleaned like any text: Tesseract's blank line between the two lines is a paragraph break at most.
    text = " ".join(result.snapshot.text.read_text().split())
    assert " ".join(SENTENCE) in text


def test_without_tesseract_a_scan_keeps_the_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # the workers are forked: they see this PATH
    inputs = tmp_path / "inputs"
    make_scanned_text_pdf(inputs / "scan.pdf", SENTENCE)
    make_text_pdf(inputs / "typed.pdf", [ENGLISH_TEXT])
    entries = _entries(build_snapshot(inputs, tmp_path / "out", options=Options(workers=1)))
    assert entries["scan.pdf"].status == "error" and entries["scan.pdf"].ocr_pages == []
    message = entries["scan.pdf"].messages[0]
    assert "no extractable text" in message and "OCR is not available" in message and "Tesseract" in message
    assert entries["typed.pdf"].status == "ok"


def _tesseracts() -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "tesseract" and "stdin" in (p.info["cmdline"] or [])
    ]


def test_ocr_runs_under_the_worker_time_limit(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    make_scanned_text_pdf(inputs / "scan.pdf", SENTENCE * 18, pages=3)  # ~2 s of OCR a page
    make_text_pdf(inputs / "typed.pdf", [ENGLISH_TEXT])
    entries = _entries(build_snapshot(inputs, tmp_path / "out", options=Options(timeout_s=1, workers=1)))
    assert entries["scan.pdf"].status == "error" and "time limit of 1 s" in entries["scan.pdf"].messages[0]
    assert entries["typed.pdf"].status == "ok"


def test_tesseract_dies_with_its_worker(tmp_path: Path) -> None:
    # What the time limit does to a worker mid-OCR (SIGKILL), done at the moment Tesseract is surely running.
    inputs = tmp_path / "inputs"
    make_scanned_text_pdf(inputs / "scan.pdf", SENTENCE * 18, pages=3)
    before = {p.pid for p in _tesseracts()}
    killed: list[psutil.Process] = []

    def kill_the_worker_under_tesseract() -> None:
        deadline = time.monotonic() + 60
        while not (found := [p for p in _tesseracts() if p.pid not in before]) and time.monotonic() < deadline:
            time.sleep(0.01)
        # Until it has read its image and is recognising (an image cut short would end it on its own).
        while found[0].cpu_times().user < 0.5 and time.monotonic() < deadline:
            time.sleep(0.01)
        killed.extend(found)
        os.kill(found[0].ppid(), signal.SIGKILL)

    killer = threading.Thread(target=kill_the_worker_under_tesseract)
    killer.start()
    result = build_snapshot(inputs, tmp_path / "out", options=Options(timeout_s=60, workers=1))
    killer.join()
    assert "killed by the system" in _entries(result)["scan.pdf"].messages[0]
    [tesseract] = killed
    # The kernel kills it with its parent (PR_SET_PDEATHSIG); on its own it would finish the page (seconds).
    assert _gone(tesseract, within_s=0.3), "Tesseract outlived its killed worker"


def _gone(process: psutil.Process, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.01)
    return False


def test_a_page_tesseract_fails_on_is_named_and_the_document_is_not_called_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    broken = tools / "tesseract"  # a real executable that fails the way a broken install does
    broken.write_text("#!/bin/sh\necho 'Error: tessdata not found' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    inputs = tmp_path / "inputs"
    make_scanned_text_pdf(inputs / "scan.pdf", SENTENCE)
    scan = _entries(build_snapshot(inputs, tmp_path / "out", options=Options(workers=1)))["scan.pdf"]
    assert scan.status == "error" and scan.ocr_pages == []
    assert scan.messages[0].startswith("OCR failed on page(s) 1 (OcrFailed: tesseract exit status 1")
    assert "tessdata not found" in scan.messages[0]
    assert not any("corrupt PDF" in message for message in scan.messages)
