"""Across runs: snapshots are never overwritten, unchanged documents come from the cache, output is deterministic."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aks_jobs.pdf_text.build import BuildResult, Options, build_snapshot
from aks_jobs.pdf_text.manifest import build_manifest
from aks_jobs.pdf_text.snapshot import snapshot_stem, write_snapshot
from pipeline_contracts.snapshot_manifest import SnapshotManifest
from synthetic_data.pdfs import ENGLISH_TEXT, make_encrypted_pdf, make_text_pdf, make_truncated_pdf


def manifest_of(result: BuildResult) -> dict:
    assert result.snapshot is not None
    return json.loads(result.snapshot.manifest.read_text(encoding="utf-8"))


def cached_flags(result: BuildResult) -> dict[str, bool]:
    return {entry.name: entry.cached for entry in result.entries}


def make_documents(folder: Path, count: int) -> None:
    for index in range(count):
        make_text_pdf(folder / f"doc_{index}.pdf", [f"Document {chr(65 + index)} says hello. {ENGLISH_TEXT}"])


def test_back_to_back_runs_write_new_snapshots_and_never_touch_old_ones(tmp_path: Path) -> None:
    inputs, output = tmp_path / "inputs", tmp_path / "processed"
    make_documents(inputs, 1)
    first = build_snapshot(inputs, output)
    before = {path.name: path.read_bytes() for path in output.glob("combined_data_*")}
    second = build_snapshot(inputs, output)  # same second, most likely: it must wait for the next
    assert second.snapshot.text.name > first.snapshot.text.name
    assert {path.name: path.read_bytes() for path in output.glob("combined_data_*") if path.name in before} == before
    assert len(list(output.glob("combined_data_*"))) == 4
    assert second.snapshot.text.read_bytes() == first.snapshot.text.read_bytes()


def test_a_taken_name_makes_the_writer_wait_for_the_next_second(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    taken = tmp_path / f"{snapshot_stem(now)}.txt"
    taken.write_text("older snapshot")
    (tmp_path / f"{snapshot_stem(now + timedelta(seconds=1))}.manifest.json").write_text("{}")
    snapshot = write_snapshot(tmp_path, "new text\n", lambda name, created: build_manifest(name, created, []))
    assert snapshot.text.name > f"{snapshot_stem(now + timedelta(seconds=1))}.txt"
    assert taken.read_text() == "older snapshot"
    assert SnapshotManifest.model_validate_json(snapshot.manifest.read_text()).snapshot == snapshot.text.name
    assert snapshot.text.read_text() == "new text\n"


def test_a_newer_snapshot_from_a_clock_ahead_still_sorts_before_the_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ahead = datetime.now(UTC) + timedelta(hours=1)
    (tmp_path / f"{snapshot_stem(ahead)}.txt").write_text("from a machine whose clock is ahead")
    with caplog.at_level(logging.WARNING):
        snapshot = write_snapshot(tmp_path, "text\n", lambda name, created: build_manifest(name, created, []))
    assert snapshot.text.name == f"{snapshot_stem(ahead.replace(microsecond=0) + timedelta(seconds=1))}.txt"
    assert max(path.name for path in tmp_path.glob("*.txt")) == snapshot.text.name
    assert "clock is behind the newest snapshot" in caplog.text


def test_adding_one_pdf_extracts_only_that_one(tmp_path: Path) -> None:
    inputs, output = tmp_path / "inputs", tmp_path / "processed"
    make_documents(inputs, 3)
    first = build_snapshot(inputs, output)
    assert first.extracted == 3 and not any(cached_flags(first).values())
    make_text_pdf(inputs / "doc_new.pdf", ["A brand new upload. " + ENGLISH_TEXT])
    second = build_snapshot(inputs, output)
    assert second.extracted == 1
    assert cached_flags(second) == {"doc_0.pdf": True, "doc_1.pdf": True, "doc_2.pdf": True, "doc_new.pdf": False}
    # The snapshot still holds every document, exactly as a run without any cache would write it.
    fresh = build_snapshot(inputs, tmp_path / "fresh")
    assert second.snapshot.text.read_text() == fresh.snapshot.text.read_text()
    assert "A brand new upload." in second.snapshot.text.read_text()
    assert "Document A says hello." in second.snapshot.text.read_text()


def test_errors_that_belong_to_the_file_are_cached_too(tmp_path: Path) -> None:
    inputs, output = tmp_path / "inputs", tmp_path / "processed"
    make_documents(inputs, 1)
    make_encrypted_pdf(inputs / "locked.pdf", [ENGLISH_TEXT], user_password="secret")
    make_truncated_pdf(inputs / "cut.pdf", [ENGLISH_TEXT])
    first = build_snapshot(inputs, output)
    second = build_snapshot(inputs, output)
    assert cached_flags(second) == {"cut.pdf": True, "doc_0.pdf": True, "locked.pdf": True}
    assert [entry.messages for entry in second.entries] == [entry.messages for entry in first.entries]
    assert [entry.status for entry in second.entries] == ["error", "ok", "error"]


def test_a_cache_entry_from_other_extraction_code_is_not_used(tmp_path: Path) -> None:
    inputs, output = tmp_path / "inputs", tmp_path / "processed"
    make_documents(inputs, 2)
    first = build_snapshot(inputs, output)
    stale = output / "cache" / f"{first.entries[0].sha256}.json"
    entry = json.loads(stale.read_text())
    entry["version"] = "written-by-an-older-cleaner"
    entry["extraction"]["text"] = "stale text that must not reach the snapshot"
    stale.write_text(json.dumps(entry))
    (output / "cache" / f"{first.entries[1].sha256}.json").write_text("{ not json")  # damaged entry
    second = build_snapshot(inputs, output)
    assert cached_flags(second) == {"doc_0.pdf": False, "doc_1.pdf": False}
    assert "stale text" not in second.snapshot.text.read_text()
    assert second.snapshot.text.read_text() == first.snapshot.text.read_text()
    assert json.loads(stale.read_text())["version"] != "written-by-an-older-cleaner"  # refreshed
    assert cached_flags(build_snapshot(inputs, output)) == {"doc_0.pdf": True, "doc_1.pdf": True}


def test_output_is_deterministic_whatever_the_worker_count(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    make_documents(inputs, 5)
    make_text_pdf(inputs / "b" / "nested.pdf", ["Nested. " + ENGLISH_TEXT])
    one = build_snapshot(inputs, tmp_path / "one", options=Options(workers=1))
    two = build_snapshot(inputs, tmp_path / "two", options=Options(workers=2))
    assert one.snapshot.text.read_bytes() == two.snapshot.text.read_bytes()
    volatile = {"seconds", "cached"}
    manifests = [manifest_of(result) for result in (one, two)]
    for manifest in manifests:
        for entry in manifest["documents"]:
            for key in volatile:
                entry.pop(key)
    assert manifests[0]["documents"] == manifests[1]["documents"]
    assert manifests[0]["documents_sha256"] == manifests[1]["documents_sha256"]
    assert manifests[0]["totals"] == manifests[1]["totals"]


def test_identical_uploads_under_two_names_contribute_their_text_once(tmp_path: Path) -> None:
    inputs, output = tmp_path / "inputs", tmp_path / "processed"
    make_documents(inputs, 1)
    (inputs / "copy_of_doc_0.pdf").write_bytes((inputs / "doc_0.pdf").read_bytes())
    result = build_snapshot(inputs, output)
    assert result.extracted == 1
    copy, original = result.entries
    assert (copy.name, original.name) == ("copy_of_doc_0.pdf", "doc_0.pdf")
    # Name order decides which one carries the text: the first name, here the copy.
    assert copy.status == "ok" and copy.chars > 0
    assert original.status == "warning" and original.chars == 0
    assert "same content as 'copy_of_doc_0.pdf'" in original.messages[0]
    assert result.snapshot.text.read_text().count("Document A says hello.") == 1


def test_a_failed_write_leaves_no_half_snapshot(tmp_path: Path) -> None:
    def broken_manifest(name: str, created: str) -> SnapshotManifest:
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_snapshot(tmp_path, "some text\n", broken_manifest)
    assert list(tmp_path.iterdir()) == []
