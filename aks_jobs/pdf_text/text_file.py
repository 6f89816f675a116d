"""Plain text uploads (.txt, .md): their bytes -> text, with the encoding detected, or a clear reason.

Byte-order marks decide first (UTF-8, UTF-16, UTF-32), then strict UTF-8 (most text today), then
charset-normalizer's detection; where Windows-1252 (the commonest legacy encoding of English text)
reads the bytes as cleanly as its first guess, Windows-1252 wins (it guesses cp1250 for French text).
A file with NUL bytes and no UTF-16/32 mark, or one that decodes to mostly control characters, is
binary data with a text name, and says so.
"""

from __future__ import annotations

import codecs
import re

import charset_normalizer

from aks_jobs.pdf_text.extract import HEADER_WINDOW, describe_content, is_pdf_header

TEXT_SUFFIXES = (".txt", ".md")
_BOMS = [  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]
# Text has few control characters besides newlines and tabs; more than this share is binary data.
MAX_CONTROL_SHARE = 0.05
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


class NotText(Exception):
    """The file cannot be used as text; str(exc) says why and what to do."""


def is_text_name(name: str) -> bool:
    return name.lower().endswith(TEXT_SUFFIXES)


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, encoding name) of a text file's bytes; raises NotText for binary data."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError as exc:
                raise NotText(
                    f"it starts with a {encoding} byte-order mark but is not valid {encoding} ({exc}); "
                    "save it again as UTF-8 and upload that."
                ) from exc
    if is_pdf_header(data):
        raise NotText("a PDF saved under a text name: rename it to end in .pdf and upload it again.")
    if b"\x00" in data:
        raise NotText(_binary(data))
    try:
        text, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = _detect(data)
    if text and len(_CONTROLS.findall(text)) > MAX_CONTROL_SHARE * len(text):
        raise NotText(_binary(data))
    return text, encoding


def _detect(data: bytes) -> tuple[str, str]:
    matches = list(charset_normalizer.from_bytes(data))
    if not matches:
        return data.decode("cp1252", "replace"), "cp1252"
    cleanest = min(match.chaos for match in matches)
    western = [m for m in matches if m.encoding == "cp1252" and m.chaos == cleanest]
    best = western[0] if western else matches[0]
    return str(best), best.encoding


def _binary(data: bytes) -> str:
    return (
        f"binary data, not text, despite the .txt/.md name (it looks like {describe_content(data[:HEADER_WINDOW])}); "
        "upload the document in its own format (PDF) or save it as plain text."
    )
