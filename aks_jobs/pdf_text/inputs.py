"""The uploaded documents in an input folder: every file, its name, size and sha256."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from aks_jobs.pdf_text.extract import HEADER_WINDOW
from aks_jobs.pdf_text.instructions import is_instruction_name
from aks_jobs.pdf_text.text_file import is_text_name

_CHUNK = 1 << 20


@dataclass(frozen=True)
class InputFile:
    name: str  # path relative to the input folder, with "/" separators: stable across machines
    path: Path
    bytes: int
    sha256: str  # "" when the file could not be read
    head: bytes = b""  # the first HEADER_WINDOW bytes: enough to tell a PDF from other formats
    read_error: str | None = None

    @property
    def is_pdf_name(self) -> bool:
        return self.name.lower().endswith(".pdf")

    @property
    def kind(self) -> str | None:
        """How the preprocess step reads it: "pdf", "text" (.txt, .md), "instructions" (.jsonl, .json), or None."""
        if self.is_pdf_name:
            return "pdf"
        return "text" if is_text_name(self.name) else "instructions" if is_instruction_name(self.name) else None

    @property
    def extract_key(self) -> str:
        """Names this content read as this kind (cache entry, shared extraction): the same bytes named
        .pdf and .txt are read differently."""
        return self.sha256 if self.kind == "pdf" else f"{self.sha256}.{self.kind}"


def hash_file(path: Path) -> tuple[str, bytes]:
    """(sha256 hex digest, first HEADER_WINDOW bytes) in one read of the file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        head = handle.read(HEADER_WINDOW)
        digest.update(head)
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest(), head


def list_inputs(folder: Path, exclude: tuple[Path, ...] = ()) -> list[InputFile]:
    """Every regular file under `folder` (recursively), sorted by name.

    Folders in `exclude` are skipped: the output and cache folders may sit inside the input folder.
    """
    skipped = {path.resolve() for path in exclude}
    found = []
    for directory, subdirectories, files in os.walk(folder):
        subdirectories[:] = [name for name in subdirectories if (Path(directory) / name).resolve() not in skipped]
        for file_name in files:
            path = Path(directory) / file_name
            if path.is_file():
                found.append(_describe(path, path.relative_to(folder).as_posix()))
    return sorted(found, key=lambda item: item.name)


def _describe(path: Path, name: str) -> InputFile:
    try:
        sha256, head = hash_file(path)
        return InputFile(name=name, path=path, bytes=path.stat().st_size, sha256=sha256, head=head)
    except OSError as exc:  # e.g. a flaky storage mount: report this file, keep going with the rest
        return InputFile(name=name, path=path, bytes=0, sha256="", read_error=f"{type(exc).__name__}: {exc}")
