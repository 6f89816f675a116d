"""Status table semantics on a real Azurite: idempotent uploads, content identity, the active-run claim."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from function_app import uploads
from function_app.status_store import StatusStore, UploadedBlob
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.contract_samples import manifest
from tests.control_env import ControlEnv, env  # noqa: F401 - fixture

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _record(env: ControlEnv, name: str) -> str:
    return uploads.record(env.store, env.container, name, NOW)


def test_same_event_twice_is_one_record(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 alpha")
    assert _record(env, "a.pdf") == "new_content"
    assert _record(env, "a.pdf") == "duplicate"
    assert [d["name"] for d in env.store.documents()] == ["a.pdf"]
    assert len(env.store.pending_documents()) == 1


def test_same_content_reuploaded_under_same_name_keeps_one_record(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 alpha")
    _record(env, "a.pdf")
    first_etag = env.store.known_blobs()["a.pdf"]
    env.store.mark_trained_by("run-1", [d["sha256"] for d in env.store.pending_documents()])
    env.upload("a.pdf", b"%PDF-1.4 alpha")  # new ETag, same bytes
    assert _record(env, "a.pdf") == "same_content"
    assert env.store.known_blobs()["a.pdf"] != first_etag
    assert env.store.pending_documents() == []  # identical bytes never start a run


def test_same_content_under_two_names_is_one_document(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 same bytes")
    env.upload("copy of a.pdf", b"%PDF-1.4 same bytes")
    assert _record(env, "a.pdf") == "new_content"
    assert _record(env, "copy of a.pdf") == "known_content"
    pending = env.store.pending_documents()
    assert len(pending) == 1 and pending[0]["names"] == ["a.pdf", "copy of a.pdf"]
    docs = {d["name"]: d for d in env.store.documents()}
    assert docs["a.pdf"]["same_content_as"] == ["copy of a.pdf"]
    assert docs["a.pdf"]["sha256"] == docs["copy of a.pdf"]["sha256"]


def test_overwriting_a_name_with_new_bytes_is_new_content(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 first")
    _record(env, "a.pdf")
    env.store.mark_trained_by("run-1", [d["sha256"] for d in env.store.pending_documents()])
    env.upload("a.pdf", b"%PDF-1.4 second")
    assert _record(env, "a.pdf") == "new_content"
    pending = env.store.pending_documents()
    assert [p["names"] for p in pending] == [["a.pdf"]]
    assert len(env.store.documents()) == 1  # still one upload name


def test_nested_names_and_scan_records_only_missed_blobs(env: ControlEnv) -> None:
    env.upload("team/q3 report?.pdf", b"%PDF-1.4 nested")
    env.upload("b.pdf", b"%PDF-1.4 b")
    _record(env, "b.pdf")
    assert uploads.scan(env.store, env.container, NOW) == {"team/q3 report?.pdf": "new_content"}
    assert uploads.scan(env.store, env.container, NOW) == {}
    assert sorted(env.store.known_blobs()) == ["b.pdf", "team/q3 report?.pdf"]


def test_trigger_path_outside_inputs_is_refused_with_the_reason(env: ControlEnv) -> None:
    assert uploads.input_name("gpt2-training-data/inputs/x/y.pdf", "gpt2-training-data") == "x/y.pdf"
    try:
        uploads.input_name("gpt2-training-data/processed/x.txt", "gpt2-training-data")
    except ValueError as e:
        assert "inputs/" in str(e)
    else:
        raise AssertionError("a blob outside inputs/ was accepted")


def test_only_one_of_many_concurrent_claims_wins(env: ControlEnv) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def claim(i: int) -> None:
        store = StatusStore(env.store.table)
        barrier.wait()
        results.append(store.claim_active(f"run-{i}", NOW))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    assert env.store.current().active_run_id.startswith("run-")


def test_concurrent_names_for_one_content_are_all_kept(env: ControlEnv) -> None:
    barrier = threading.Barrier(5)

    def add(i: int) -> None:
        barrier.wait()
        env.store.record_upload(UploadedBlob(f"n{i}.pdf", f"etag{i}", "ab" * 32, 10, NOW), NOW)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    [doc] = env.store.pending_documents()
    assert doc["names"] == [f"n{i}.pdf" for i in range(5)]


def test_documents_report_what_preprocess_extracted(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 alpha")
    env.upload("b.pdf", b"%PDF-1.4 beta")
    _record(env, "a.pdf")
    _record(env, "b.pdf")
    assert {d["name"]: d["pages"] for d in env.store.documents()} == {"a.pdf": None, "b.pdf": None}

    extracted = manifest(
        "combined_data_20261123_120000.txt",
        {"a.pdf": ("a" * 64, "ok", []), "b.pdf": ("b" * 64, "error", ["no text layer"])},
    )
    extracted.documents[0].pages, extracted.documents[0].chars = 3, 1200
    extracted.documents[1].pages, extracted.documents[1].chars = 0, 0
    env.store.record_extraction(extracted)

    docs = {d["name"]: d for d in env.store.documents()}
    assert (docs["a.pdf"]["pages"], docs["a.pdf"]["chars"], docs["a.pdf"]["extraction"]) == (3, 1200, "ok")
    assert (docs["b.pdf"]["pages"], docs["b.pdf"]["messages"]) == (0, ["no text layer"])
    assert docs["a.pdf"]["snapshot"] == "combined_data_20261123_120000.txt"
