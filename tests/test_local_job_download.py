"""The local job's mirror of the data container on a real Azurite: every blob lands inside the job folder
or is refused with its reason, one at a time; what the container dropped is dropped locally too."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from local_stack import pipeline_job as local_job
from local_stack.pipeline_job import download_tree
from tests.azurite import azurite_connection, put_blob_verbatim  # noqa: F401 - session fixture


@pytest.fixture
def container(azurite_connection: str) -> ContainerClient:  # noqa: F811
    return BlobServiceClient.from_connection_string(azurite_connection).create_container(f"job{uuid.uuid4().hex[:10]}")


def test_a_blob_name_leading_out_of_the_job_folder_is_refused_and_the_others_copied(
    container: ContainerClient, tmp_path: Path
) -> None:
    put_blob_verbatim(container, "inputs/../../escaped.pdf", b"%PDF-1.4 out")
    container.upload_blob("inputs/a.pdf", b"%PDF-1.4 a")
    assert "inputs/../../escaped.pdf" in [b.name for b in container.list_blobs()]
    target = tmp_path / "jobs" / "job-1" / "inputs"

    result = download_tree(container, "inputs/", target, only_missing=False)

    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()] == [
        "jobs/job-1/inputs/a.pdf"
    ]
    count, skipped = result
    assert count == 1 and (target / "a.pdf").read_bytes() == b"%PDF-1.4 a"
    assert (
        list(skipped) == ["inputs/../../escaped.pdf"]
        and "outside the job folder" in skipped["inputs/../../escaped.pdf"]
    )


def test_a_blob_that_cannot_become_a_file_is_skipped_with_the_reason(
    container: ContainerClient, tmp_path: Path
) -> None:
    odd = "inputs/" + "報" * 300 + ".pdf"  # 904 bytes: over the 255 a file name may have
    container.upload_blob(odd, b"%PDF-1.4 odd")
    container.upload_blob("inputs/b.pdf", b"%PDF-1.4 b")

    count, skipped = download_tree(container, "inputs/", tmp_path / "inputs", only_missing=False)

    assert count == 1 and list(skipped) == [odd] and "File name too long" in skipped[odd]
    assert sorted(p.name for p in (tmp_path / "inputs").iterdir()) == ["b.pdf"]


def test_files_the_container_dropped_are_not_uploaded_again(container: ContainerClient, tmp_path: Path) -> None:
    processed = tmp_path / "processed"
    (processed / "cache").mkdir(parents=True)
    (processed / "cache" / "abc.json").write_text("{}")
    (processed / "combined_data_20261123_120000.txt").write_text("old text")
    local_job.upload_missing(container, processed, "processed/")
    container.delete_blob("processed/cache/abc.json")  # purged: its document was removed
    container.delete_blob("processed/combined_data_20261123_120000.txt")  # pruned by retention

    assert local_job.drop_deleted(container, "processed/", processed) == 2
    assert local_job.upload_missing(container, processed, "processed/") == 0
    assert list(container.list_blobs(name_starts_with="processed/")) == []
