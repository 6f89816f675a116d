"""Finding the preprocess manifest of a run in processed/ (written there by either backend's job)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

PROCESSED = "processed/"
_PREFIX = PROCESSED + "combined_data_"
_SUFFIX = ".manifest.json"


def manifest_name(snapshot: str) -> str:
    """processed/combined_data_X.manifest.json for snapshot combined_data_X.txt."""
    return PROCESSED + snapshot.removesuffix(".txt") + _SUFFIX


def read_manifest(container: ContainerClient, snapshot: str) -> dict | None:
    try:
        return json.loads(container.download_blob(manifest_name(snapshot)).readall())
    except ResourceNotFoundError:
        return None


def newest_manifest(container: ContainerClient, since: datetime) -> dict | None:
    """The newest manifest stamped at or after `since`, if any.

    Snapshot names carry their UTC stamp (combined_data_<yyyymmdd_HHMMSS>), so names sort by time.
    """
    stamp = since.astimezone(timezone.utc).strftime("%Y%m%d_%H%M%S")
    names = sorted(b.name for b in container.list_blobs(name_starts_with=_PREFIX) if b.name.endswith(_SUFFIX))
    if not names or names[-1].removeprefix(_PREFIX) < stamp:
        return None
    return json.loads(container.download_blob(names[-1]).readall())
