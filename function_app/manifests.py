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


# preprocess's default cache folder (--cache unset): OUTPUT/cache/<sha256>[.<limits>].json.
CACHE = PROCESSED + "cache/"


def purge_cached_extraction(container: ContainerClient, sha256: str) -> int:
    """Delete every cached extraction of this content (its text must not outlive the document)."""
    names = [b.name for b in container.list_blobs(name_starts_with=CACHE + sha256)]
    for name in names:
        container.delete_blob(name)
    return len(names)


def prune_snapshots(container: ContainerClient, keep: int, also_keep: set[str]) -> list[str]:
    """Delete all but the newest `keep` snapshots (text and manifest) and those named in `also_keep`
    (e.g. the one the serving model was trained on). Returns the snapshots deleted."""
    stems = sorted({b.name.removesuffix(_SUFFIX).removesuffix(".txt")
                    for b in container.list_blobs(name_starts_with=_PREFIX)})
    kept = set(stems[-keep:] if keep > 0 else stems) | {PROCESSED + s.removesuffix(".txt") for s in also_keep if s}
    deleted = []
    for stem in stems:
        if stem in kept:
            continue
        for name in (stem + ".txt", stem + _SUFFIX):
            try:
                container.delete_blob(name)
            except ResourceNotFoundError:
                pass
        deleted.append(stem.removeprefix(PROCESSED) + ".txt")
    return deleted
