"""The preprocess.py command line, run as AML runs it: a separate Python process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline_contracts.snapshot_manifest import SnapshotManifest
from pipeline_contracts.snapshot_ref import read_ref
from synthetic_data.pdfs import ENGLISH_TEXT, make_encrypted_pdf, make_heavy_pdf, make_image_only_pdf, make_text_pdf

SCRIPT = Path(__file__).resolve().parents[1] / "aks_jobs" / "preprocess.py"


def preprocess(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120)


def snapshots(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("combined_data_*")) if folder.exists() else []


def test_help_explains_every_option() -> None:
    done = preprocess("--help")
    assert done.returncode == 0
    for option in ("--input", "--output", "--cache", "--timeout-s", "--memory-mb", "--workers"):
        assert option in done.stdout
    assert "default: 120" in done.stdout and "default: 2048" in done.stdout
    assert "Exits 1 only when no document produced text" in " ".join(done.stdout.split())


def test_a_run_with_some_text_exits_0_even_with_broken_documents(tmp_path: Path) -> None:
    inputs, output = tmp_path / "inputs", tmp_path / "processed"
    make_text_pdf(inputs / "good.pdf", [ENGLISH_TEXT])
    make_image_only_pdf(inputs / "scan.pdf")
    (inputs / "empty.pdf").write_bytes(b"")
    done = preprocess("--input", inputs, "--output", output, "--workers", "2", "--snapshot-ref", tmp_path / "ref")
    assert done.returncode == 0, done.stderr
    names = snapshots(output)
    assert len(names) == 2 and names[0].endswith(".manifest.json") and names[1].endswith(".txt")
    manifest = SnapshotManifest.model_validate_json((output / names[0]).read_text())
    assert [entry.status for entry in manifest.documents] == ["error", "ok", "error"]
    # The run names the snapshot it wrote, for the train step and the control plane.
    assert read_ref(tmp_path / "ref").snapshot == names[1] == manifest.snapshot
    # Progress: one line per document on stderr; the summary table on stdout.
    for name in ("good.pdf", "scan.pdf", "empty.pdf"):
        assert f"] {name}: " in done.stderr
    header, values = done.stdout.splitlines()[:2]
    assert header.split() == [
        "documents",
        "ok",
        "warning",
        "error",
        "pages",
        "chars",
        "seconds",
        "cache",
        "hits",
        "extracted",
        "workers",
    ]
    assert values.split()[:4] == ["3", "1", "0", "2"]
    assert "no extractable text" in done.stdout and "empty file (0 bytes)" in done.stdout


def test_no_document_with_text_exits_1_and_writes_no_snapshot(tmp_path: Path) -> None:
    inputs, output = tmp_path / "inputs", tmp_path / "processed"
    make_image_only_pdf(inputs / "scan.pdf")
    make_encrypted_pdf(inputs / "locked.pdf", [ENGLISH_TEXT], user_password="secret")
    done = preprocess("--input", inputs, "--output", output, "--snapshot-ref", tmp_path / "ref")
    assert done.returncode == 1
    assert "no document produced text (2 document(s)" in done.stderr
    assert snapshots(output) == [] and not (tmp_path / "ref").exists()


def test_an_empty_input_folder_exits_1(tmp_path: Path) -> None:
    (tmp_path / "inputs").mkdir()
    done = preprocess("--input", tmp_path / "inputs", "--output", tmp_path / "processed")
    assert done.returncode == 1
    assert "no document produced text (0 document(s)" in done.stderr


def test_a_missing_input_folder_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    done = preprocess("--input", tmp_path / "nowhere", "--output", tmp_path / "processed")
    assert done.returncode == 2
    assert f"--input {tmp_path / 'nowhere'} is not a folder" in done.stderr


def test_invalid_limits_are_rejected() -> None:
    for args in (["--timeout-s", "0"], ["--memory-mb", "0"], ["--workers", "-1"]):
        done = preprocess("--input", ".", "--output", "out", *args)
        assert done.returncode == 2 and "must be at least" in done.stderr


def test_tiny_memory_and_time_flags_reach_the_workers(tmp_path: Path) -> None:
    inputs, output = tmp_path / "inputs", tmp_path / "processed"
    make_heavy_pdf(inputs / "heavy.pdf", megabytes=8)
    done = preprocess("--input", inputs, "--output", output, "--memory-mb", "1")
    assert done.returncode == 1 and "memory limit of 1 MB" in done.stdout
    done = preprocess("--input", inputs, "--output", output, "--timeout-s", "0.3")
    assert done.returncode == 1 and "time limit of 0.3 s" in done.stdout


def test_a_custom_cache_folder_is_used(tmp_path: Path) -> None:
    inputs, output, cache = tmp_path / "inputs", tmp_path / "processed", tmp_path / "cache"
    make_text_pdf(inputs / "good.pdf", [ENGLISH_TEXT])
    assert preprocess("--input", inputs, "--output", output, "--cache", cache).returncode == 0
    assert len(list(cache.glob("*.json"))) == 1
    assert not (output / "cache").exists()
