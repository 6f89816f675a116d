"""OCR for pages without a text layer: pdfium renders the page, the Tesseract binary reads it.

Runs inside the isolated worker, so the worker's time limit covers it: Tesseract is started so that it
dies with the worker (PR_SET_PDEATHSIG) when the worker is killed at its deadline, and it inherits the
worker's memory limit. Without a `tesseract` binary on PATH there is no OCR and scans keep the
"no extractable text" message.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
from functools import cache

import pypdfium2 as pdfium

# Tesseract's documented sweet spot for body text is ~300 dpi; PDF user space is 72 units per inch.
RENDER_DPI = 300
LANGUAGE = "eng"
_PR_SET_PDEATHSIG = 1


def tesseract() -> str | None:
    """Path of the tesseract binary, or None when OCR is not available here."""
    return shutil.which("tesseract")


@cache
def tesseract_version() -> str:
    """First line of `tesseract --version` ("" without one): part of the extraction cache's version."""
    binary = tesseract()
    if binary is None:
        return ""
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False, timeout=30)
    return (result.stdout or result.stderr).splitlines()[0] if (result.stdout or result.stderr) else ""


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _pgm(bitmap: pdfium.PdfBitmap) -> bytes:
    """An 8-bit grayscale bitmap as a binary PGM image, which Tesseract reads from stdin."""
    rows = bytes(bitmap.buffer)
    if bitmap.stride != bitmap.width:  # pdfium pads rows to 4 bytes
        rows = b"".join(rows[y * bitmap.stride : y * bitmap.stride + bitmap.width] for y in range(bitmap.height))
    return b"P5\n%d %d\n255\n" % (bitmap.width, bitmap.height) + rows


class OcrFailed(Exception):
    """Tesseract failed on a page; str(exc) says how."""


def ocr_page(page: pdfium.PdfPage, binary: str) -> str:
    bitmap = page.render(scale=RENDER_DPI / 72, grayscale=True)
    try:
        image = _pgm(bitmap)
    finally:
        bitmap.close()
    # One thread: the workers already use every core, one document each.
    environment = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    result = subprocess.run(
        [binary, "stdin", "stdout", "-l", LANGUAGE],
        input=image,
        capture_output=True,
        check=False,
        env=environment,
        preexec_fn=_die_with_parent,
    )
    if result.returncode != 0:
        raise OcrFailed(
            f"tesseract exit status {result.returncode}: {result.stderr.decode(errors='replace').strip()[-300:]}"
        )
    return result.stdout.decode("utf-8", errors="replace")


def ocr_pages(data: bytes, numbers: list[int], binary: str) -> tuple[dict[int, str], dict[int, str]]:
    """(text, error) by 1-based page number for the given pages of the PDF in `data`."""
    texts: dict[int, str] = {}
    errors: dict[int, str] = {}
    document = pdfium.PdfDocument(data)
    try:
        for number in numbers:
            page = document[number - 1]
            try:
                texts[number] = ocr_page(page, binary)
            except (OcrFailed, pdfium.PdfiumError, OSError) as exc:
                errors[number] = f"{type(exc).__name__}: {exc}"
            finally:
                page.close()
    finally:
        document.close()
    return texts, errors
