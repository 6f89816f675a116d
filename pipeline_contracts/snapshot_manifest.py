"""The manifest preprocess writes beside each snapshot: which documents, their hashes, what happened to each.

Written by aks_jobs/pdf_text (preprocess); read by the train step (per-document lengths) and the control plane
(per-document outcome for the documents table).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline_contracts.blob_layout import SNAPSHOT_PATTERN
from pipeline_contracts.document_kinds import Kind

DocumentStatus = Literal["ok", "warning", "error"]
SHA256_PATTERN = r"^[0-9a-f]{64}$"


class DocumentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^([0-9a-f]{64})?$")  # "" when the file could not be read
    bytes: int = Field(ge=0)
    pages: int = Field(ge=0)
    chars: int = Field(ge=0)  # characters this document contributed to the snapshot
    status: DocumentStatus
    messages: list[str]
    cached: bool
    seconds: float = Field(ge=0)
    # Defaults: manifests written before these fields existed are still read.
    ocr_pages: list[int] = Field(default_factory=list)  # 1-based pages whose text was read by OCR
    records: int = Field(0, ge=0)  # instruction files (.jsonl/.json): records used as training examples
    engine: str = ""  # the PDF engine that read the text: "pdfium", "pypdf", "pdfium+pypdf", "text", "instructions"
    kind: Kind | None = None  # document kind, from its folder inputs/<kind>/ (pipeline_contracts.document_kinds)


class Totals(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: int = Field(ge=0)
    ok: int = Field(ge=0)
    warning: int = Field(ge=0)
    error: int = Field(ge=0)
    pages: int = Field(ge=0)
    chars: int = Field(ge=0)


class SnapshotManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snapshot: str = Field(pattern=SNAPSHOT_PATTERN)  # the text file's name, beside this manifest
    created_utc: str  # ISO 8601, second precision, "Z"
    documents_sha256: str = Field(pattern=SHA256_PATTERN)  # over the sorted "name:sha256\n" lines
    documents: list[DocumentEntry]
    totals: Totals
    # The kinds whose documents gave text, sorted: the special tokens the train step adds.
    kinds: list[Kind] = Field(default_factory=list)
