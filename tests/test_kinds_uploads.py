"""A document kind travels from the upload to the snapshot: the UI writes inputs/<kind>/<name>, the control plane
records that name (blob event and scan), the local job copies it into the same folder, and preprocess reads the
kind from it. On a real Azurite."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aks_jobs.pdf_text.build import Options, build_snapshot
from function_app import uploads as control_uploads
from local_stack.pipeline_job import download_tree
from pipeline_contracts.blob_layout import INPUTS
from synthetic_data.pdfs import ENGLISH_TEXT, make_text_pdf
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.control_env import make_env
from ui import uploads
from ui.settings import UiSettings
from ui.storage import container_client

LIMIT = 1024 * 1024
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("dropped", "kind", "blob"),
    [
        ("C:\\Users\\me\\to anna.pdf", "letters", "inputs/letters/to anna.pdf"),
        ("q3.md", "memo-2026", "inputs/memo-2026/q3.md"),
        ("facts.jsonl", "", "inputs/facts.jsonl"),
    ],
)
def test_a_kind_puts_the_upload_into_its_folder(dropped: str, kind: str, blob: str) -> None:
    assert uploads.blob_name(dropped, kind) == blob


@pytest.mark.parametrize("kind", ["bad kind", "letters/2021", "../x", "endoftext", "-x", "x" * 41, "Brief_e"])
def test_a_bad_kind_is_refused_before_anything_is_written(kind: str, azurite_connection: str) -> None:  # noqa: F811
    env = make_env(azurite_connection)
    result = uploads.upload_document(env.container, "a.txt", b"Some notes.", LIMIT, kind)
    assert result.outcome == uploads.REFUSED and "document kind" in result.message
    assert "letters A-Z a-z, digits and hyphens" in result.message or "reserved" in result.message
    assert not list(env.container.list_blobs())


def test_a_kind_survives_from_the_ui_upload_to_the_snapshot(
    azurite_connection: str,  # noqa: F811 - fixture
    tmp_path: Path,
) -> None:
    env = make_env(azurite_connection)
    ui_container = container_client(
        UiSettings(storage_connection=azurite_connection, data_container=env.settings.data_container)
    )
    letter = make_text_pdf(tmp_path / "to-anna.pdf", ["Dear Anna, the orchard is in bloom. " + ENGLISH_TEXT])
    result = uploads.upload_document(ui_container, "to-anna.pdf", letter.read_bytes(), LIMIT, "letters")
    assert (result.outcome, result.blob_name) == (uploads.UPLOADED, "inputs/letters/to-anna.pdf")
    uploads.upload_document(ui_container, "plain.txt", ("Plain notes. " + ENGLISH_TEXT).encode(), LIMIT)

    # The blob event (Event Grid subject) and the scan both record the name with its folder.
    subject = f"/blobServices/default/containers/{env.settings.data_container}/blobs/inputs/letters/to-anna.pdf"
    assert control_uploads.follow_event(
        env.store, env.container, env.settings.data_container, control_uploads.CREATED, subject, NOW
    ) == ("new_content")
    assert control_uploads.scan(env.store, env.container, NOW) == {"plain.txt": "new_content"}
    assert sorted(env.store.document_names()) == ["letters/to-anna.pdf", "plain.txt"]

    # The local job copies inputs/ into its input folder as AML's mount does: folders kept.
    documents = tmp_path / "documents"
    count, skipped = download_tree(env.container, INPUTS, documents, only_missing=False)
    assert (count, skipped) == (2, {})
    snapshot = build_snapshot(documents, tmp_path / "processed", options=Options(workers=1)).snapshot
    manifest = json.loads(snapshot.manifest.read_text())
    assert {d["name"]: d["kind"] for d in manifest["documents"]} == {
        "letters/to-anna.pdf": "letters",
        "plain.txt": None,
    }
    assert manifest["kinds"] == ["letters"]
    assert snapshot.text.read_text().startswith("<|letters|> Dear Anna, the orchard is in bloom.")
