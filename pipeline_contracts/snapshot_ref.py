"""Which snapshot one run's preprocess wrote: runs/<run id>/snapshot/snapshot.json.

The snapshots share processed/, so a run's own snapshot is named here rather than guessed from time: train
reads it to train on exactly that snapshot, and the control plane reads it to record the run's extraction.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline_contracts.blob_layout import SNAPSHOT_PATTERN

FILE_NAME = "snapshot.json"


class SnapshotRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    snapshot: str = Field(pattern=SNAPSHOT_PATTERN)  # combined_data_<stamp>.txt in processed/


def write_ref(folder: Path, snapshot: str) -> Path:
    """Write folder/snapshot.json naming `snapshot`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE_NAME
    path.write_text(SnapshotRef(snapshot=snapshot).model_dump_json() + "\n", encoding="utf-8")
    return path


def read_ref(folder: Path) -> SnapshotRef:
    """folder/snapshot.json; FileNotFoundError or pydantic.ValidationError when it is missing or malformed."""
    return SnapshotRef.model_validate_json((folder / FILE_NAME).read_bytes())
