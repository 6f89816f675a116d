"""Read one PDF with pdfium (pypdfium2): the raw text of each page, an order of magnitude faster than pypdf.

pdfium is C++: a crash or an abort on a hostile file kills the process it runs in, which is why it
only ever runs inside an isolated worker (isolate.py).
"""

from __future__ import annotations

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from aks_jobs.pdf_text.pages import PdfPages

# pdfium reports a hyphen it inferred at a line break as U+0002; the cleaner joins words broken at a
# soft hyphen, so hand it one.
_GENERATED_HYPHEN = str.maketrans({"\x02": "\u00ad"})


class PdfiumCannotOpen(Exception):
    """pdfium cannot open this file (password, format it does not accept); pypdf may still."""


def _open(data: bytes) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise PdfiumCannotOpen(str(exc)) from exc


def read_with_pdfium(data: bytes) -> PdfPages:
    """Text of every page; raises PdfiumCannotOpen when the document cannot be opened at all."""
    document = _open(data)
    notes = []
    if pdfium_c.FPDF_GetSecurityHandlerRevision(document) != -1:
        notes.append("encrypted with an empty user password: opened without one and extracted normally.")
    result = PdfPages(texts=[], notes=notes, engine="pdfium")
    try:
        for number in range(1, len(document) + 1):
            try:
                page = document[number - 1]
                try:
                    text_page = page.get_textpage()
                    try:
                        result.texts.append(text_page.get_text_range().translate(_GENERATED_HYPHEN))
                    finally:
                        text_page.close()
                finally:
                    page.close()
            except pdfium.PdfiumError as exc:  # one bad page must not lose the others
                result.texts.append("")
                result.failed_pages[number] = f"PdfiumError: {exc}"
    finally:
        document.close()
    return result
