"""The UI's upload rules on a real Azurite: what is refused, and that no document is ever overwritten."""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from local_stack.azurite import ACCOUNT_KEY
from local_stack.processes import free_port
from synthetic_data.pdfs import make_text_pdf
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.control_env import make_env
from ui import uploads
from ui.settings import SettingsError, UiSettings
from ui.storage import container_client

LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def pdf_bytes(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    folder = tmp_path_factory.mktemp("pdfs")
    first = make_text_pdf(folder / "a.pdf", ["Declaration: the archive opens at nine."]).read_bytes()
    second = make_text_pdf(folder / "b.pdf", ["Declaration: the harbour closes at dusk."]).read_bytes()
    return first, second


@pytest.fixture
def container(azurite_connection: str) -> ContainerClient:  # noqa: F811 - fixture
    return BlobServiceClient.from_connection_string(azurite_connection).create_container(f"ui{uuid.uuid4().hex[:12]}")


def _names(container: ContainerClient) -> list[str]:
    return sorted(b.name for b in container.list_blobs())


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "the file is empty (0 bytes); choose the document again."),
        (
            b"PK\x03\x04 a docx renamed to .pdf",
            "not a PDF (nor .txt, .md, .jsonl or .json): its content does not start "
            "with %PDF-, whatever its name says.",
        ),
        (
            b"%PDF-1.7" + b"x" * LIMIT,
            "the file is 1.0 MiB, over the 1.0 MiB limit (UI_MAX_UPLOAD_MB); split it or ask "
            "an admin to raise the limit.",
        ),
    ],
)
def test_refuses_empty_non_pdf_and_too_large_files_with_the_reason(data: bytes, expected: str) -> None:
    assert uploads.refusal(data, LIMIT) == expected


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("notes.txt", b"Plain notes.", None),
        ("README.MD", b"# Title\n\nText.", None),
        ("wide.txt", "\ufeffUTF-16 text".encode("utf-16"), None),  # NUL bytes after a byte-order mark are text
        ("legacy.txt", "caf\u00e9".encode("cp1252"), None),  # the preprocess step detects the encoding
        ("photo.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not text, whatever its name says: it holds binary data"),
        ("paper.md", b"%PDF-1.7 ...", "a PDF with a text file's name: rename it to end in .pdf"),
        ("facts.jsonl", b'{"instruction": "Say hi.", "output": "Hi."}\n', None),  # records are checked by preprocess
        ("facts.json", b'[{"prompt": "Say hi.", "completion": "Hi."}]', None),
    ],
)
def test_plain_text_files_are_accepted_and_binary_ones_named_txt_refused(
    name: str, data: bytes, expected: str | None
) -> None:
    reason = uploads.refusal(data, LIMIT, name)
    assert reason is None if expected is None else reason.startswith(expected)


def test_a_text_file_is_stored_under_its_own_suffix_with_a_text_content_type(container: ContainerClient) -> None:
    result = uploads.upload_document(container, "Minutes.MD", b"# Minutes\n\nThe archive opens at nine.", LIMIT)
    assert result.outcome == uploads.UPLOADED and result.blob_name == "inputs/Minutes.md"
    assert (
        container.get_blob_client("inputs/Minutes.md").get_blob_properties().content_settings.content_type
        == "text/markdown"
    )
    other = uploads.upload_document(container, "Minutes.md", b"# Minutes\n\nThe harbour closes at dusk.", LIMIT)
    assert other.outcome == uploads.RENAMED and other.blob_name.endswith(".md")
    assert other.blob_name.startswith("inputs/Minutes-")
    notes = uploads.upload_document(container, "notes.txt", b"Plain notes.", LIMIT)
    assert (
        container.get_blob_client(notes.blob_name).get_blob_properties().content_settings.content_type == "text/plain"
    )


def test_accepts_a_pdf_header_after_leading_junk_as_the_pdf_spec_does() -> None:
    assert uploads.refusal(b"\n\r junk %PDF-1.4 ...", LIMIT) is None
    assert uploads.refusal(b"x" * 1100 + b"%PDF-1.4", LIMIT) is not None


@pytest.mark.parametrize(
    ("dropped", "blob"),
    [
        ("report.pdf", "inputs/report.pdf"),
        ("Report.PDF", "inputs/Report.pdf"),
        ("C:\\Users\\me\\minutes 2026.pdf", "inputs/minutes 2026.pdf"),
        ("../../etc/passwd", "inputs/passwd.pdf"),
        ("what?#now.pdf", "inputs/what_now.pdf"),
        (".pdf", "inputs/document.pdf"),
        ("notes.TXT", "inputs/notes.txt"),
        ("C:\\docs\\read me.md", "inputs/read me.md"),
        ("notes.txt.exe", "inputs/notes.txt.exe.pdf"),
        ("alpaca.JSONL", "inputs/alpaca.jsonl"),
        ("alpaca.json", "inputs/alpaca.json"),
    ],
)
def test_blob_names_are_a_safe_base_name_under_inputs_ending_in_pdf(dropped: str, blob: str) -> None:
    assert uploads.blob_name(dropped) == blob


def test_new_file_is_uploaded_with_its_sha256_and_pdf_content_type(
    container: ContainerClient, pdf_bytes: tuple[bytes, bytes]
) -> None:
    first, _ = pdf_bytes
    result = uploads.upload_document(container, "a.pdf", first, LIMIT)
    assert (result.outcome, result.blob_name) == (uploads.UPLOADED, "inputs/a.pdf")
    props = container.get_blob_client("inputs/a.pdf").get_blob_properties()
    assert props.metadata["sha256"] == hashlib.sha256(first).hexdigest()
    assert props.content_settings.content_type == "application/pdf"
    assert container.download_blob("inputs/a.pdf").readall() == first


def test_same_name_same_content_writes_nothing(container: ContainerClient, pdf_bytes: tuple[bytes, bytes]) -> None:
    first, _ = pdf_bytes
    uploads.upload_document(container, "a.pdf", first, LIMIT)
    etag = container.get_blob_client("inputs/a.pdf").get_blob_properties().etag
    result = uploads.upload_document(container, "a.pdf", first, LIMIT)
    assert result.outcome == uploads.DUPLICATE and "Already in the knowledge base as inputs/a.pdf" in result.message
    assert container.get_blob_client("inputs/a.pdf").get_blob_properties().etag == etag
    assert _names(container) == ["inputs/a.pdf"]


def test_same_name_other_content_keeps_both_and_the_original_untouched(
    container: ContainerClient, pdf_bytes: tuple[bytes, bytes]
) -> None:
    first, second = pdf_bytes
    uploads.upload_document(container, "a.pdf", first, LIMIT)
    result = uploads.upload_document(container, "a.pdf", second, LIMIT)
    beside = f"inputs/a-{hashlib.sha256(second).hexdigest()[:12]}.pdf"
    assert (result.outcome, result.blob_name) == (uploads.RENAMED, beside)
    assert container.download_blob("inputs/a.pdf").readall() == first
    assert container.download_blob(beside).readall() == second
    # Dropping that second file again is recognised, not a third copy.
    again = uploads.upload_document(container, "a.pdf", second, LIMIT)
    assert (again.outcome, again.blob_name) == (uploads.DUPLICATE, beside)
    assert _names(container) == sorted(["inputs/a.pdf", beside])


def test_blob_written_by_another_tool_is_compared_by_its_content(
    container: ContainerClient, pdf_bytes: tuple[bytes, bytes]
) -> None:
    first, _ = pdf_bytes
    container.upload_blob("inputs/a.pdf", first)  # e.g. az storage blob upload: no sha256 metadata
    assert uploads.upload_document(container, "a.pdf", first, LIMIT).outcome == uploads.DUPLICATE


def test_refused_file_writes_nothing(container: ContainerClient) -> None:
    result = uploads.upload_document(container, "notes.pdf", b"just some text", LIMIT)
    assert (result.outcome, result.blob_name) == (uploads.REFUSED, None)
    assert result.message.startswith("Refused: not a PDF")
    assert _names(container) == []


def test_storage_error_is_reported_per_file_not_raised(
    azurite_connection: str,  # noqa: F811 - fixture
    pdf_bytes: tuple[bytes, bytes],
) -> None:
    missing = ContainerClient.from_connection_string(azurite_connection, "no-such-container")
    result = uploads.upload_document(missing, "a.pdf", pdf_bytes[0], LIMIT)
    assert result.outcome == uploads.REFUSED
    assert result.message.startswith("Not uploaded: storage said The specified container does not exist.")


def test_unreachable_storage_is_reported_within_seconds(pdf_bytes: tuple[bytes, bytes]) -> None:
    closed = f"http://127.0.0.1:{free_port()}/devstoreaccount1"
    container = container_client(
        UiSettings(storage_connection=f"AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};BlobEndpoint={closed};")
    )
    started = time.monotonic()
    result = uploads.upload_document(container, "a.pdf", pdf_bytes[0], LIMIT)
    assert time.monotonic() - started < 10
    assert result.message == (
        f"Not uploaded: cannot reach the storage account at {closed}/gpt2-training-data (is "
        f"it running, and is DataStorage right?). Nothing was written."
    )


def test_the_control_plane_records_what_the_ui_uploaded(
    azurite_connection: str,  # noqa: F811 - fixture
    pdf_bytes: tuple[bytes, bytes],
) -> None:
    env = make_env(azurite_connection)
    ui_container = container_client(
        UiSettings(storage_connection=azurite_connection, data_container=env.settings.data_container)
    )
    first, second = pdf_bytes
    uploads.upload_document(ui_container, "a.pdf", first, LIMIT)
    uploads.upload_document(ui_container, "a.pdf", second, LIMIT)
    uploads.upload_document(ui_container, "a.pdf", first, LIMIT)
    env.tick()
    documents = {d["name"]: d["sha256"] for d in env.store.documents()}
    assert documents == {
        "a.pdf": hashlib.sha256(first).hexdigest(),
        f"a-{hashlib.sha256(second).hexdigest()[:12]}.pdf": hashlib.sha256(second).hexdigest(),
    }
    assert len(env.store.pending_documents()) == 2


def test_storage_needs_a_connection_string_or_an_account_url() -> None:
    with pytest.raises(SettingsError, match="set DataStorage to a connection string"):
        container_client(UiSettings())
    by_identity = container_client(UiSettings(storage_account_url="https://acct.blob.core.windows.net"))
    assert by_identity.url == "https://acct.blob.core.windows.net/gpt2-training-data"
    assert type(by_identity.credential).__name__ == "DefaultAzureCredential"
