"""Following inputs/ on a real Azurite: every blob is recorded or reported, one at a time, and a blob that
cannot be recorded never stops the others or the tick."""

from __future__ import annotations

from datetime import UTC, datetime

from function_app import uploads
from function_app.run_states import PENDING
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.control_env import ControlEnv, env  # noqa: F401 - fixture

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# Table keys hold at most 1 KiB and no / \ # ? or control characters (Azure Storage REST "Understanding the
# Table service data model"; azure-data-tables (Azure/azure-sdk-for-python sdk/tables) does not check keys
# client-side, its _error.py only decodes the service's InvalidInput). Azurite enforces the same limit.
# A blob name may have 1024 characters of any script, so names this long must still fit.
LONG_NESTED = "/".join(["資料" * 40] * 3) + "/報告.pdf"  # 250 chars, 240-byte segments: a valid file path
LONG_LATIN = "/".join(["q#?%" * 50] * 4) + ".pdf"  # 807 chars; # ? are forbidden in keys, % encodes to 3


def test_every_usable_blob_name_is_recorded_whatever_its_length_or_characters(env: ControlEnv) -> None:
    for name in (LONG_NESTED, LONG_LATIN, "a.pdf"):
        env.upload(name, f"%PDF-1.4 {name[:3]}".encode())

    outcomes = uploads.scan(env.store, env.container, NOW)

    assert outcomes == {LONG_NESTED: "new_content", LONG_LATIN: "new_content", "a.pdf": "new_content"}
    assert sorted(env.store.known_blobs()) == sorted([LONG_NESTED, LONG_LATIN, "a.pdf"])
    assert sorted(d["name"] for d in env.store.documents()) == sorted([LONG_NESTED, LONG_LATIN, "a.pdf"])
    assert env.store.problems() == []


def test_an_unreadable_blob_is_reported_and_never_stops_the_tick(env: ControlEnv) -> None:
    env.upload("archived.pdf", b"%PDF-1.4 cold")
    env.container.get_blob_client("inputs/archived.pdf").set_standard_blob_tier("Archive")  # reads fail
    env.upload("b.pdf", b"%PDF-1.4 b")

    run = env.tick()  # raised on the old code (every tick), so no run ever started

    assert run is not None and run.state == PENDING
    assert env.store.document_names() == ["b.pdf"]
    [problem] = env.orchestrator.status()["problem_documents"]
    assert problem["name"] == "archived.pdf" and "BlobArchived" in problem["reason"]
    # Rehydrated and read at last: recorded, and no longer reported.
    env.container.get_blob_client("inputs/archived.pdf").set_standard_blob_tier("Hot")
    uploads.scan(env.store, env.container, NOW)
    assert env.store.problems() == [] and "archived.pdf" in env.store.document_names()


def test_a_name_no_file_can_have_is_reported_with_what_to_do(env: ControlEnv) -> None:
    odd = "報" * 300 + ".pdf"  # 904 bytes in UTF-8: no file system takes it as one file name
    env.upload(odd, b"%PDF-1.4 odd")
    env.upload("b.pdf", b"%PDF-1.4 b")

    assert uploads.scan(env.store, env.container, NOW) == {odd: "problem", "b.pdf": "new_content"}

    assert env.store.document_names() == ["b.pdf"]
    [problem] = env.store.problems()
    assert problem["name"] == odd and "904 bytes" in problem["reason"] and "rename" in problem["reason"]
    assert uploads.scan(env.store, env.container, NOW) == {}  # reported once, not rewritten every tick
    env.container.delete_blob(f"inputs/{odd}")
    uploads.scan(env.store, env.container, NOW)
    assert env.store.problems() == []  # gone from inputs/: nothing left to report


def test_a_failing_trigger_event_is_reported_not_raised(env: ControlEnv) -> None:
    env.upload("archived.pdf", b"%PDF-1.4 cold")
    env.container.get_blob_client("inputs/archived.pdf").set_standard_blob_tier("Archive")
    assert uploads.record(env.store, env.container, "archived.pdf", NOW) == "problem"
    assert [p["name"] for p in env.store.problems()] == ["archived.pdf"]


def test_rows_written_under_the_old_key_layout_are_read_and_moved(env: ControlEnv) -> None:
    env.upload("team/q3 report?.pdf", b"%PDF-1.4 q3")
    uploads.record(env.store, env.container, "team/q3 report?.pdf", NOW)
    [row] = env.store.table.query_entities("PartitionKey eq 'blob'")
    env.store.table.delete_entity("blob", row["RowKey"])
    legacy = {k: v for k, v in row.items() if k != "name"}
    env.store.table.create_entity({**legacy, "RowKey": "team%2Fq3%20report%3F.pdf"})  # as the old code wrote it

    assert env.store.document_names() == ["team/q3 report?.pdf"]
    env.upload("team/q3 report?.pdf", b"%PDF-1.4 q3, revised")
    assert uploads.record(env.store, env.container, "team/q3 report?.pdf", NOW) == "new_content"

    [row] = env.store.table.query_entities("PartitionKey eq 'blob'")
    assert row["name"] == "team/q3 report?.pdf" and len(row["RowKey"]) == 64 and row["version"] == 2


def test_text_uploads_are_recorded_by_the_scan_and_the_blob_event(env: ControlEnv) -> None:
    # The control plane records every blob under inputs/; which kinds give text is the preprocess step's call.
    env.upload("notes.txt", b"Plain notes.")
    env.upload("handbook/intro.md", b"# Intro")
    assert uploads.scan(env.store, env.container, NOW) == {
        "notes.txt": "new_content",
        "handbook/intro.md": "new_content",
    }
    env.upload("later.txt", b"Arrived after the scan.")
    assert uploads.record(env.store, env.container, "later.txt", NOW) == "new_content"
    assert sorted(env.store.document_names()) == ["handbook/intro.md", "later.txt", "notes.txt"]
