"""Plain text uploads (.txt, .md): read with their encoding detected, cleaned like PDF text, binary refused."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

from aks_jobs.pdf_text.build import Options, build_snapshot
from synthetic_data.pdfs import ENGLISH_TEXT, make_text_pdf

LEGACY = (
    "The caf\u00e9\u2019s menu \u2013 na\u00efve cr\u00e8me br\u00fbl\u00e9e \u2013 is printed on the back. "
    + ENGLISH_TEXT
)


def test_text_files_in_any_common_encoding_reach_the_snapshot_cleaned(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "plain.txt").write_bytes(
        ("Plain UTF-8 notes:\r\nan exam-\r\nple of\t\ttabs.\r\n\r\n\r\n" + ENGLISH_TEXT).encode()
    )
    (inputs / "bom16.txt").write_bytes(
        codecs.BOM_UTF16_LE + ("UTF-16 with a mark. " + ENGLISH_TEXT).encode("utf-16-le")
    )
    (inputs / "bom8.md").write_bytes(
        codecs.BOM_UTF8 + ("# Heading\n\nMarkdown *kept* as text. " + ENGLISH_TEXT).encode()
    )
    (inputs / "legacy.md").write_bytes(LEGACY.encode("cp1252"))
    make_text_pdf(inputs / "paper.pdf", ["A PDF beside them. " + ENGLISH_TEXT])
    result = build_snapshot(inputs, tmp_path / "out", options=Options(workers=2))
    entries = {entry.name: entry for entry in result.entries}
    assert {name: entries[name].status for name in entries} == dict.fromkeys(entries, "ok")
    assert {entries[name].engine for name in ("plain.txt", "bom16.txt", "bom8.md", "legacy.md")} == {"text"}
    assert entries["paper.pdf"].engine == "pdfium"
    text = result.snapshot.text.read_text(encoding="utf-8")
    # Cleaned like PDF text: newlines normalised, hyphenation joined, whitespace collapsed, blank runs shrunk.
    assert "Plain UTF-8 notes:\nan example of tabs.\n\nThe committee" in text
    assert "UTF-16 with a mark." in text and "\ufeff" not in text
    assert "# Heading\n\nMarkdown *kept* as text." in text
    assert LEGACY in text
    [note] = entries["legacy.md"].messages
    assert "decoded as" in note and "not UTF-8" in note
    manifest = json.loads(result.snapshot.manifest.read_text())
    assert [d["chars"] for d in manifest["documents"] if d["name"] == "plain.txt"][0] > len(ENGLISH_TEXT)


def test_binary_files_named_txt_get_a_clear_error_and_the_rest_carry_on(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
    (inputs / "noise.md").write_bytes(bytes(range(1, 32)) * 100)  # control bytes, no NUL
    (inputs / "empty.txt").write_bytes(b"")
    (inputs / "blank.txt").write_text(" \n\t\n")
    (inputs / "good.txt").write_text("Good notes. " + ENGLISH_TEXT)
    result = build_snapshot(inputs, tmp_path / "out", options=Options(workers=1))
    entries = {entry.name: entry for entry in result.entries}
    for name in ("photo.txt", "noise.md"):
        assert entries[name].status == "error" and entries[name].chars == 0
        assert "binary data, not text, despite the .txt/.md name" in entries[name].messages[0]
    assert "empty file (0 bytes)" in entries["empty.txt"].messages[0]
    assert entries["blank.txt"].status == "error" and "only whitespace" in entries["blank.txt"].messages[0]
    assert entries["good.txt"].status == "ok"
    assert result.snapshot.text.read_text().startswith("Good notes.")


def test_the_same_bytes_as_pdf_and_as_text_are_read_as_each(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    pdf = make_text_pdf(inputs / "paper.pdf", [ENGLISH_TEXT])
    (inputs / "paper.txt").write_bytes(pdf.read_bytes())  # a PDF saved under a text name
    entries = {e.name: e for e in build_snapshot(inputs, tmp_path / "out", options=Options(workers=1)).entries}
    assert entries["paper.pdf"].status == "ok"
    assert entries["paper.txt"].status == "error"
    assert "a PDF saved under a text name: rename it to end in .pdf" in entries["paper.txt"].messages[0]
