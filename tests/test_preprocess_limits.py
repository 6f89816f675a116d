"""Time and memory limits per document, and how many workers the machine or container allows."""

from __future__ import annotations

import mmap
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from aks_jobs.capacity import available_cpus, cgroup_cpu_quota, cgroup_memory_limit, choose_workers
from aks_jobs.pdf_text.build import Options, build_snapshot
from synthetic_data.pdfs import ENGLISH_TEXT, make_heavy_pdf, make_text_pdf


def _entries(result) -> dict[str, object]:
    return {entry.name: entry for entry in result.entries}


def test_a_document_over_the_time_limit_is_stopped_and_the_others_continue(tmp_path: Path) -> None:
    inputs, output = tmp_path / "inputs", tmp_path / "processed"
    make_heavy_pdf(inputs / "endless.pdf", megabytes=3)  # ~5 s of pypdf work
    make_text_pdf(inputs / "fine.pdf", [ENGLISH_TEXT])
    # One worker: the big file goes first, so "fine.pdf" only runs if the stuck worker was replaced.
    started = time.monotonic()
    result = build_snapshot(inputs, output, options=Options(timeout_s=0.5, workers=1))
    elapsed = time.monotonic() - started
    entries = _entries(result)
    endless = entries["endless.pdf"]
    assert endless.status == "error"
    assert "time limit of 0.5 s" in endless.messages[0] and "--timeout-s" in endless.messages[0]
    assert 0.5 <= endless.seconds < 2.0
    assert entries["fine.pdf"].status == "ok" and entries["fine.pdf"].chars > 0
    assert elapsed < 4.0
    # A timeout is an outcome of the limits, not of the file alone: cached for these limits only, so the same
    # limits do not spend the whole timeout on it again every run, and a higher limit extracts it again.
    assert not (output / "cache" / f"{endless.sha256}.json").exists()
    assert (output / "cache" / f"{endless.sha256}.t0.5-m2048.json").exists()
    # Nothing is extracted again (not timed: a second snapshot within the same second waits for the next one).
    rerun = build_snapshot(inputs, output, options=Options(timeout_s=0.5, workers=1))
    again = _entries(rerun)
    assert rerun.extracted == 0 and again["endless.pdf"].cached and again["fine.pdf"].cached
    assert again["endless.pdf"].messages == endless.messages
    raised = _entries(build_snapshot(inputs, output, options=Options(timeout_s=0.7, workers=1)))
    assert not raised["endless.pdf"].cached and "time limit of 0.7 s" in raised["endless.pdf"].messages[0]


def test_a_document_over_the_memory_limit_is_stopped_and_the_others_continue(tmp_path: Path) -> None:
    inputs, output = tmp_path / "inputs", tmp_path / "processed"
    make_heavy_pdf(inputs / "bloated.pdf", megabytes=40)  # a 40 MB content stream in a ~150 kB file
    make_text_pdf(inputs / "fine.pdf", [ENGLISH_TEXT])
    # The limit is room beyond what the forked worker inherits, so it holds however much this
    # session has mapped (torch, earlier tests): the default must be enough for a normal document.
    limit_mb = 32
    result = build_snapshot(inputs, output, options=Options(memory_mb=limit_mb, workers=1))
    entries = _entries(result)
    bloated = entries["bloated.pdf"]
    assert bloated.status == "error"
    assert f"memory limit of {limit_mb} MB" in bloated.messages[0] and "--memory-mb" in bloated.messages[0]
    assert entries["fine.pdf"].status == "ok" and entries["fine.pdf"].chars > 0
    assert not (output / "cache" / f"{bloated.sha256}.json").exists()
    assert (output / "cache" / f"{bloated.sha256}.t120-m{limit_mb}.json").exists()  # for this limit only


def test_the_memory_limit_is_room_beyond_what_the_parent_already_has_mapped(tmp_path: Path) -> None:
    # A parent that maps more than the default limit (torch alone reserves gigabytes of address
    # space) must still give its workers the full room: an absolute limit stopped every large document.
    inputs, output = tmp_path / "inputs", tmp_path / "processed"
    make_heavy_pdf(inputs / "bloated.pdf", megabytes=40)
    reserved = mmap.mmap(-1, 3 * 2**30)  # address space only: untouched pages take no memory
    try:
        assert psutil.Process().memory_info().vms > Options().memory_mb * 2**20
        # The file that failed at 32 MB gets past that point with the default (and runs into a
        # short time limit instead, which keeps this test fast): the failure was the setting.
        bloated = build_snapshot(inputs, output, options=Options(timeout_s=1.0, workers=1)).entries[0]
    finally:
        reserved.close()
    assert "time limit" in bloated.messages[0], bloated.messages


def test_workers_run_documents_in_parallel_up_to_the_requested_number(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    for index in range(4):
        make_heavy_pdf(inputs / f"slow_{index}.pdf", megabytes=2 + index)
    started = time.monotonic()
    result = build_snapshot(inputs, tmp_path / "out", options=Options(timeout_s=0.4, workers=4))
    # Four documents that each hit a 0.4 s limit: in parallel this takes ~0.4 s, one by one 1.6 s.
    assert time.monotonic() - started < 1.4
    assert result.workers == 4
    assert all("time limit" in entry.messages[0] for entry in result.entries)


def _cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content + "\n")
    return root


def test_cgroup_v2_cpu_quota_and_memory_limit_are_read(tmp_path: Path) -> None:
    root = _cgroup(tmp_path, {"cpu.max": "150000 100000", "memory.max": str(3 * 2**30)})
    assert cgroup_cpu_quota(root) == 1.5
    assert cgroup_memory_limit(root) == 3 * 2**30
    assert available_cpus(root) == min(2, len(os.sched_getaffinity(0)))


def test_cgroup_v1_files_and_unlimited_values_are_understood(tmp_path: Path) -> None:
    v1 = _cgroup(
        tmp_path / "v1",
        {
            "cpu/cpu.cfs_quota_us": "100000",
            "cpu/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": str(2**30),
        },
    )
    assert cgroup_cpu_quota(v1) == 1.0 and cgroup_memory_limit(v1) == 2**30
    unlimited_v1 = _cgroup(
        tmp_path / "u1", {"cpu/cpu.cfs_quota_us": "-1", "memory/memory.limit_in_bytes": str(2**63 - 4096)}
    )
    assert cgroup_cpu_quota(unlimited_v1) is None and cgroup_memory_limit(unlimited_v1) is None
    unlimited_v2 = _cgroup(tmp_path / "u2", {"cpu.max": "max 100000", "memory.max": "max"})
    assert cgroup_cpu_quota(unlimited_v2) is None and cgroup_memory_limit(unlimited_v2) is None
    assert available_cpus(tmp_path / "missing") == len(os.sched_getaffinity(0))


def test_workers_fit_the_container_memory(tmp_path: Path) -> None:
    # 5 GiB of container memory fits two workers of 2 GiB each, whatever the CPU count.
    root = _cgroup(tmp_path, {"cpu.max": "max 100000", "memory.max": str(5 * 2**30)})
    assert choose_workers(0, 2048, root) == min(2, len(os.sched_getaffinity(0)))
    assert choose_workers(0, 8192, root) == 1
    assert choose_workers(3, 8192, root) == 3  # an explicit request is honoured


def test_a_memory_limit_below_the_interpreter_size_fails_each_document_cleanly(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    make_heavy_pdf(inputs / "a.pdf", megabytes=8)
    make_heavy_pdf(inputs / "b.pdf", megabytes=9)
    result = build_snapshot(inputs, tmp_path / "out", options=Options(memory_mb=1, workers=1))
    assert result.snapshot is None and not result.has_text
    assert [entry.status for entry in result.entries] == ["error", "error"]
    messages = [entry.messages for entry in result.entries]
    assert all("memory limit of 1 MB" in entry.messages[0] for entry in result.entries), messages


@pytest.mark.parametrize(
    ("signal_number", "phrase"),
    [
        # SIGTERM rather than SIGSEGV: pytest's faulthandler, inherited by the worker, would dump a trace.
        (signal.SIGTERM, "the extraction process crashed (signal SIGTERM)"),
        (signal.SIGKILL, "killed by the system, most likely for using too much memory"),
    ],
)
def test_a_worker_that_dies_mid_document_fails_only_that_document(
    tmp_path: Path, signal_number: int, phrase: str
) -> None:
    inputs = tmp_path / "inputs"
    make_heavy_pdf(inputs / "victim.pdf", megabytes=3)
    make_text_pdf(inputs / "fine.pdf", [ENGLISH_TEXT])

    # Only children started by build_snapshot are workers: in a full test session this process also
    # owns servers (e.g. the session's Azurite), which must not be the ones killed.
    others = {child.pid for child in psutil.Process().children()}

    def kill_the_first_worker() -> None:
        # What a crash in a C extension or the kernel's OOM killer would do to it.
        deadline = time.monotonic() + 10
        while (
            not (workers := [c for c in psutil.Process().children() if c.pid not in others])
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        time.sleep(0.2)
        os.kill(workers[0].pid, signal_number)

    killer = threading.Thread(target=kill_the_first_worker)
    killer.start()
    result = build_snapshot(inputs, tmp_path / "out", options=Options(timeout_s=30, workers=1))
    killer.join()
    entries = _entries(result)
    assert entries["victim.pdf"].status == "error" and phrase in entries["victim.pdf"].messages[0]
    assert entries["fine.pdf"].status == "ok"
    assert not (tmp_path / "out" / "cache" / f"{entries['victim.pdf'].sha256}.json").exists()


def test_a_document_whose_text_dwarfs_its_file_gives_no_text(tmp_path: Path) -> None:
    inputs, output = tmp_path / "inputs", tmp_path / "processed"
    bomb = make_heavy_pdf(inputs / "bomb.pdf", megabytes=0.5)  # ~2.4 kB of file, ~300k characters of text
    make_text_pdf(inputs / "fine.pdf", [ENGLISH_TEXT])
    result = build_snapshot(inputs, output, options=Options(workers=1))  # the default limits
    entries = _entries(result)
    assert entries["bomb.pdf"].status == "error" and entries["bomb.pdf"].chars == 0
    [message] = [m for m in entries["bomb.pdf"].messages if "per byte" in m]
    assert f"{bomb.stat().st_size:,}-byte file" in message and "--max-chars-per-byte" in message
    assert "PREPROCESS_MAX_CHARS_PER_BYTE" in message
    assert entries["fine.pdf"].status == "ok"
    assert "Jack a dull boy" not in result.snapshot.text.read_text()


def test_text_per_document_and_per_corpus_is_capped_with_the_reason(tmp_path: Path) -> None:
    inputs, output = tmp_path / "inputs", tmp_path / "processed"
    for name in ("a.pdf", "b.pdf", "c.pdf"):
        make_text_pdf(inputs / name, [f"{name} says: {ENGLISH_TEXT}"])
    full = _entries(build_snapshot(inputs, output, options=Options(workers=1)))
    assert all(full[n].chars > 300 for n in full)

    result = build_snapshot(inputs, output, options=Options(workers=1, max_document_chars=300, max_corpus_chars=700))

    entries = _entries(result)
    assert all(e.cached for e in entries.values())  # text limits need no new extraction
    assert (entries["a.pdf"].chars, entries["b.pdf"].chars, entries["c.pdf"].chars) == (300, 300, 0)
    assert entries["a.pdf"].status == "warning" and "cut to the first 300" in entries["a.pdf"].messages[-1]
    assert "PREPROCESS_MAX_DOCUMENT_CHARS" in entries["a.pdf"].messages[-1]
    assert entries["c.pdf"].status == "error" and "limit of 700" in entries["c.pdf"].messages[-1]
    assert "--max-corpus-chars" in entries["c.pdf"].messages[-1]
    text = result.snapshot.text.read_text()
    assert "c.pdf says" not in text and len(text) <= 700
