"""Document kinds (seed 003): uploads under inputs/<kind>/ go into the snapshot as `<|kind|> text <|endoftext|>`,
the manifest records each document's kind and the snapshot's kinds; documents directly under inputs/ are as
before, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aks_jobs.lm.corpus import load_corpus
from aks_jobs.pdf_text.build import Options, build_snapshot
from aks_jobs.pdf_text.document import process_document
from aks_jobs.pdf_text.manifest import combined_text
from aks_jobs.pdf_text.summary import format_summary
from pipeline_contracts.document_kinds import KIND_PATTERN, kind_problem
from synthetic_data.pdfs import ENGLISH_TEXT, make_text_pdf


def _build(inputs: Path, output: Path):
    result = build_snapshot(inputs, output, options=Options(workers=2))
    return {e.name: e for e in result.entries}, result


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_documents_in_kind_folders_are_wrapped_in_their_kind_token(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    letter = _write(inputs / "letters" / "to-anna.txt", "Dear Anna, the orchard is in bloom. " + ENGLISH_TEXT)
    make_text_pdf(inputs / "letters" / "2021" / "old.pdf", ["Dear Otto, we sailed on Monday. " + ENGLISH_TEXT])
    memo = _write(inputs / "memos" / "q3.md", "Memo: budgets are due on Friday. " + ENGLISH_TEXT)
    plain = _write(inputs / "plain.txt", "No kind at all. " + ENGLISH_TEXT)
    entries, result = _build(inputs, tmp_path / "out")

    assert {name: (e.status, e.kind) for name, e in entries.items()} == {
        "letters/2021/old.pdf": ("ok", "letters"),  # deeper folders keep the first folder's kind
        "letters/to-anna.txt": ("ok", "letters"),
        "memos/q3.md": ("ok", "memos"),
        "plain.txt": ("ok", None),
    }
    manifest = json.loads(result.snapshot.manifest.read_text())
    assert manifest["kinds"] == ["letters", "memos"]
    assert "document kinds (documents): letters (2), memos (1)" in format_summary(result)
    assert [d["kind"] for d in manifest["documents"]] == ["letters", "letters", "memos", None]

    text = result.snapshot.text.read_text(encoding="utf-8")
    letter_text, memo_text, plain_text = (process_document(path).text for path in (letter, memo, plain))
    assert f"<|letters|> {letter_text} <|endoftext|>" in text
    assert f"<|memos|> {memo_text} <|endoftext|>" in text
    assert text.endswith(f"\n\n{plain_text}\n")  # no kind: not wrapped
    assert text.startswith("<|letters|> Dear Otto, we sailed on Monday.")
    # The train step cuts the snapshot into its documents by the manifest's chars: each one whole, wrapped.
    documents = load_corpus(tmp_path / "out").documents
    assert documents[1] == f"<|letters|> {letter_text} <|endoftext|>"
    assert [len(d) for d in documents] == [d["chars"] for d in manifest["documents"]]


def test_a_folder_that_is_no_valid_kind_fails_only_its_documents(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    _write(inputs / "bad kind!" / "a.txt", "Spaces are no kind. " + ENGLISH_TEXT)
    _write(inputs / "endoftext" / "b.txt", "Reserved name. " + ENGLISH_TEXT)
    _write(inputs / "-dash" / "c.txt", "Starts with a hyphen. " + ENGLISH_TEXT)
    good = _write(inputs / "notes" / "d.txt", "A good note. " + ENGLISH_TEXT)
    entries, result = _build(inputs, tmp_path / "out")

    for name, folder in (("bad kind!/a.txt", "bad kind!"), ("-dash/c.txt", "-dash")):
        entry = entries[name]
        assert (entry.status, entry.chars, entry.kind) == ("error", 0, None)
        assert f"inputs/{folder}/" in entry.messages[-1] and KIND_PATTERN in entry.messages[-1]
    assert entries["endoftext/b.txt"].status == "error" and "reserved" in entries["endoftext/b.txt"].messages[-1]
    assert entries["notes/d.txt"].status == "ok"
    text = result.snapshot.text.read_text(encoding="utf-8")
    assert text == f"<|notes|> {process_document(good).text} <|endoftext|>\n"
    assert json.loads(result.snapshot.manifest.read_text())["kinds"] == ["notes"]


def test_a_copy_in_a_bad_folder_does_not_take_the_text_of_a_good_one(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    _write(inputs / "a b" / "x.txt", "Twin text. " + ENGLISH_TEXT)  # sorts first, but cannot be used
    _write(inputs / "twins" / "x.txt", "Twin text. " + ENGLISH_TEXT)
    entries, result = _build(inputs, tmp_path / "out")
    assert entries["a b/x.txt"].status == "error"
    assert entries["twins/x.txt"].status == "ok" and entries["twins/x.txt"].chars > 0
    assert result.snapshot.text.read_text(encoding="utf-8").startswith("<|twins|> Twin text.")


def test_instruction_records_in_a_kind_folder_each_start_with_the_kind(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    records = [
        {"instruction": "Name the keeper.", "output": "Odile."},
        {"prompt": "Where is the key?", "completion": "Under the stone."},
    ]
    _write(inputs / "qa" / "facts.jsonl", "\n".join(json.dumps(r) for r in records) + "\n")
    entries, result = _build(inputs, tmp_path / "out")
    assert (entries["qa/facts.jsonl"].kind, entries["qa/facts.jsonl"].records) == ("qa", 2)
    assert result.snapshot.text.read_text(encoding="utf-8") == (
        "<|qa|> ### Instruction:\nName the keeper.\n\n### Response:\nOdile.<|endoftext|>"
        "<|qa|> ### Instruction:\nWhere is the key?\n\n### Response:\nUnder the stone.<|endoftext|>\n"
    )


def test_without_sub_folders_the_snapshot_is_the_documents_text_byte_for_byte(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    paths = [
        _write(inputs / "a.txt", "First note. " + ENGLISH_TEXT),
        make_text_pdf(inputs / "b.pdf", ["A paper. " + ENGLISH_TEXT]),
        _write(inputs / "c.jsonl", json.dumps({"instruction": "Say hi.", "output": "Hi."}) + "\n"),
    ]
    entries, result = _build(inputs, tmp_path / "out")
    expected = combined_text([process_document(path).text for path in paths])
    assert result.snapshot.text.read_bytes() == expected.encode("utf-8")
    assert "<|" not in expected.replace("<|endoftext|>", "")
    assert {e.kind for e in entries.values()} == {None}
    assert json.loads(result.snapshot.manifest.read_text())["kinds"] == []
    assert "document kinds" not in format_summary(result)


FOLDER_NAMES = st.text(alphabet="abXY09-_ .!é", min_size=1, max_size=8).filter(
    lambda n: n.strip(".") and n == n.strip()
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    folders=st.lists(
        st.one_of(st.none(), FOLDER_NAMES, st.sampled_from(["letters", "memo-2", "endoftext"])), max_size=6
    ),
    nested=st.booleans(),
)
def test_every_upload_gets_an_entry_and_its_kind_whatever_the_folder_names(
    tmp_path_factory: pytest.TempPathFactory, folders: list[str | None], nested: bool
) -> None:
    """Invariants over any mix of folder names: every file has an entry; a valid folder is its kind and wraps
    its text; an invalid one is an error for that file alone; the train step reads back each document whole."""
    root = tmp_path_factory.mktemp("kinds")
    inputs = root / "inputs"
    inputs.mkdir()
    expected = {}
    for index, folder in enumerate(folders):
        name = f"doc{index}.txt" if folder is None else f"{folder}/{'deep/' if nested else ''}doc{index}.txt"
        _write(inputs / name, f"Document number {index}. " + ENGLISH_TEXT)
        expected[name] = None if folder is None else folder
    _write(inputs / "anchor.txt", "Always here. " + ENGLISH_TEXT)
    expected["anchor.txt"] = None
    entries, result = _build(inputs, root / "out")

    assert set(entries) == set(expected)
    for name, folder in expected.items():
        entry = entries[name]
        if folder is not None and kind_problem(folder):
            assert (entry.status, entry.chars, entry.kind) == ("error", 0, None)
            assert f"inputs/{folder}/" in entry.messages[-1]
        else:
            assert (entry.status, entry.kind) == ("ok", folder) and entry.chars > 0
    manifest = json.loads(result.snapshot.manifest.read_text())
    assert manifest["kinds"] == sorted({e.kind for e in entries.values() if e.kind})
    documents = load_corpus(root / "out").documents
    with_text = [e for e in entries.values() if e.chars]
    assert len(documents) == len(with_text)
    for document, entry in zip(documents, sorted(with_text, key=lambda e: e.name), strict=True):
        assert document.startswith(f"<|{entry.kind}|> ") == bool(entry.kind)
        assert document.endswith(" <|endoftext|>") == bool(entry.kind)
