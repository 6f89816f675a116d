"""Check a dropped file and put it into inputs/ of the data container without ever losing a document.

Same name, same bytes: nothing is written (the document is already there; no new run is started).
Same name, different bytes: the new file is kept BESIDE the old one as <stem>-<sha256[:12]>.<ext>. The
control plane records documents by name + ETag + sha256, snapshots are traceable to exact documents,
and the system never modifies inputs/: silently replacing a PDF would drop its text from the next model
without anyone deciding so. The suffix comes from the content, so re-dropping that file is again a no-op.
Writes are conditional (If-None-Match: *), so two people uploading the same name at once cannot
overwrite each other either.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from azure.core.exceptions import AzureError, ResourceExistsError, ServiceRequestError
from azure.storage.blob import BlobClient, ContainerClient, ContentSettings

from pipeline_contracts.blob_layout import INPUTS as INPUT_PREFIX
from pipeline_contracts.document_kinds import kind_problem

PDF_MAGIC = b"%PDF-"
# Text the preprocess step reads besides PDFs (plain text; instruction records), and the content type each is
# stored with.
TEXT_TYPES = {".txt": "text/plain", ".md": "text/markdown", ".jsonl": "application/jsonl", ".json": "application/json"}
# A text file may carry a UTF-16/32 byte-order mark, whose NUL bytes are text; other NUL bytes are not.
_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
# Where the header may start: the PDF spec allows leading bytes, and readers (pypdf too) search the
# first kilobyte for it.
MAGIC_WINDOW = 1024
# Metadata the UI writes so later duplicates are found without downloading the blob.
SHA256_METADATA = "sha256"

UPLOADED, DUPLICATE, RENAMED, REFUSED = "uploaded", "duplicate", "renamed", "refused"


@dataclass(frozen=True)
class UploadResult:
    file_name: str  # as dropped
    outcome: str  # uploaded | duplicate | renamed | refused
    message: str  # one sentence for the person who dropped it
    blob_name: str | None = None  # where the document is in the container


def _text_suffix(file_name: str) -> str | None:
    """ ".txt", ".md", ".jsonl" or ".json" when the name says text, else None (the document is a PDF)."""
    return next((suffix for suffix in TEXT_TYPES if file_name.lower().endswith(suffix)), None)


def refusal(data: bytes, max_bytes: int, file_name: str = "") -> str | None:
    """Why these bytes cannot be a training document, or None when they can.

    The preprocess step detects a text file's encoding and explains what it cannot read; here only what
    is plainly wrong is refused: binary bytes under a text name, non-PDF bytes under any other name."""
    if not data:
        return "the file is empty (0 bytes); choose the document again."
    if len(data) > max_bytes:
        return (
            f"the file is {_mib(len(data))}, over the {_mib(max_bytes)} limit (UI_MAX_UPLOAD_MB); "
            f"split it or ask an admin to raise the limit."
        )
    if _text_suffix(file_name):
        if PDF_MAGIC in data[:MAGIC_WINDOW]:
            return "a PDF with a text file's name: rename it to end in .pdf and drop it again."
        if b"\x00" in data[:MAGIC_WINDOW] and not data.startswith(_WIDE_BOMS):
            return (
                "not text, whatever its name says: it holds binary data; save it as plain text (.txt, .md), "
                "instruction records (.jsonl, .json) or PDF."
            )
        return None
    if PDF_MAGIC not in data[:MAGIC_WINDOW]:
        return (
            "not a PDF (nor .txt, .md, .jsonl or .json): its content does not start with %PDF-, whatever its name says."
        )
    return None


def kind_refusal(kind: str) -> str | None:
    """Why `kind` cannot name a document kind ("" is no kind), or None."""
    problem = kind_problem(kind) if kind else None
    return f"the document kind {problem}." if problem else None


def blob_name(file_name: str, kind: str = "") -> str:
    """inputs/[<kind>/]<name>.<ext>: the base name only, odd characters made safe, ending in .txt, .md, .jsonl or
    .json for text and in .pdf for everything else; in the kind's folder when one is given (checked first)."""
    base = re.split(r"[\\/]", file_name.strip())[-1]
    suffix = _text_suffix(base) or ".pdf"
    stem = base[: -len(suffix)] if base.lower().endswith(suffix) else base
    # Control characters, '#' and '?' break blob URLs; runs of them collapse to one underscore.
    stem = re.sub(r"[\x00-\x1f\x7f#?%]+", "_", stem).strip(" .") or "document"
    return f"{INPUT_PREFIX}{kind + '/' if kind else ''}{stem}{suffix}"


def upload_document(
    container: ContainerClient, file_name: str, data: bytes, max_bytes: int, kind: str = ""
) -> UploadResult:
    """A PDF, .txt/.md or .jsonl/.json file into inputs/ (inputs/<kind>/ for a document kind), never overwriting
    another document."""
    reason = refusal(data, max_bytes, file_name) or kind_refusal(kind)
    if reason:
        return UploadResult(file_name, REFUSED, f"Refused: {reason}")
    sha256 = hashlib.sha256(data).hexdigest()
    wanted = blob_name(file_name, kind)
    try:
        if _create(container.get_blob_client(wanted), data, sha256, file_name):
            return UploadResult(file_name, UPLOADED, f"Uploaded as {wanted}.", wanted)
        if _stored_sha256(container.get_blob_client(wanted)) == sha256:
            return UploadResult(
                file_name,
                DUPLICATE,
                f"Already in the knowledge base as {wanted} (same content); nothing uploaded.",
                wanted,
            )
        stem, dot, suffix = wanted.rpartition(".")
        beside = f"{stem}-{sha256[:12]}{dot}{suffix}"
        if _create(container.get_blob_client(beside), data, sha256, file_name):
            return UploadResult(
                file_name,
                RENAMED,
                f"A different file is already named {wanted}; kept both: this one is {beside}.",
                beside,
            )
        # Only this very content can have made that name (bar a 48-bit prefix collision).
        return UploadResult(
            file_name, DUPLICATE, f"Already in the knowledge base as {beside} (same content); nothing uploaded.", beside
        )
    except ServiceRequestError:
        return UploadResult(
            file_name,
            REFUSED,
            f"Not uploaded: cannot reach the storage account at {container.url} "
            f"(is it running, and is DataStorage right?). Nothing was written.",
        )
    except AzureError as err:
        return UploadResult(
            file_name, REFUSED, f"Not uploaded: storage said {_first_line(err)}. Try again; nothing was overwritten."
        )


def _create(blob: BlobClient, data: bytes, sha256: str, file_name: str) -> bool:
    """Write the blob only if no blob has that name; False when one already does."""
    try:
        blob.upload_blob(
            data,
            overwrite=False,
            content_settings=ContentSettings(content_type=_content_type(blob.blob_name)),
            metadata={SHA256_METADATA: sha256, "uploaded_by": "web-ui", "original_name": _ascii(file_name)},
        )
    except ResourceExistsError:
        return False
    return True


def _content_type(name: str) -> str:
    return TEXT_TYPES.get("." + name.rpartition(".")[2].lower(), "application/pdf")


def _stored_sha256(blob: BlobClient) -> str:
    """The existing blob's sha256: from its metadata when we wrote it, else by reading it."""
    recorded = blob.get_blob_properties().metadata.get(SHA256_METADATA)
    if recorded:
        return recorded
    return hashlib.sha256(blob.download_blob().readall()).hexdigest()


def _ascii(text: str) -> str:
    # Blob metadata travels as HTTP headers: ASCII only.
    return text.encode("ascii", "replace").decode("ascii")


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def _first_line(err: AzureError) -> str:
    return str(err.message or err).strip().splitlines()[0].rstrip(".")
