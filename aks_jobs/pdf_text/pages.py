"""What an engine read from one PDF, before cleaning: shared by the pdfium and pypdf readers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# "pdfium+pypdf": pdfium read the document, pypdf found text on pages pdfium left empty.
Engine = Literal["pdfium", "pypdf", "pdfium+pypdf"]


@dataclass
class PdfPages:
    texts: list[str]  # raw text of each page, "" where a page had none or failed
    failed_pages: dict[int, str] = field(default_factory=dict)  # 1-based page number -> error
    notes: list[str] = field(default_factory=list)  # things worth knowing that are not problems
    repairs: list[str] = field(default_factory=list)  # what pypdf reported fixing, each once
    engine: Engine = "pypdf"
    ocr_tried: bool = False  # Tesseract was there and read the pages that had no text
    ocr_pages: list[int] = field(default_factory=list)  # 1-based pages whose text came from OCR
    ocr_failed: dict[int, str] = field(default_factory=dict)  # 1-based page -> how Tesseract failed on it
