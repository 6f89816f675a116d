"""The preprocess outputs in the data container (pipeline_contracts.blob_layout): a run's snapshot manifest,
the extraction cache and snapshot retention."""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient
from pydantic import ValidationError

from pipeline_contracts import snapshot_ref
from pipeline_contracts.blob_layout import (
    CACHE,
    PROCESSED,
    SNAPSHOT_OUTPUT_PREFIX,
    SNAPSHOT_REF_OUTPUT,
    manifest_file,
    run_output,
    snapshot_file,
)
from pipeline_contracts.snapshot_manifest import SnapshotManifest
from pipeline_contracts.snapshot_ref import SnapshotRef

__all__ = [
    "CACHE",
    "PROCESSED",
    "manifest_name",
    "prune_snapshots",
    "purge_cached_extraction",
    "read_manifest",
    "run_snapshot",
]


def manifest_name(snapshot: str) -> str:
    """processed/combined_data_X.manifest.json for snapshot combined_data_X.txt."""
    return PROCESSED + manifest_file(snapshot)


def read_manifest(container: ContainerClient, snapshot: str) -> SnapshotManifest | None:
    """The manifest of that snapshot; None while it is not there (pruned, or not written yet)."""
    try:
        return SnapshotManifest.model_validate_json(container.download_blob(manifest_name(snapshot)).readall())
    except ResourceNotFoundError:
        return None


def run_snapshot(container: ContainerClient, run_id: str) -> str | None:
    """The snapshot that run's preprocess wrote, as its job recorded it (runs/<id>/snapshot/snapshot.json); None
    before preprocess has finished. A job submitted before jobs recorded it has none: its evaluation names it."""
    name = run_output(run_id, SNAPSHOT_REF_OUTPUT) + snapshot_ref.FILE_NAME
    try:
        return SnapshotRef.model_validate_json(container.download_blob(name).readall()).snapshot
    except ResourceNotFoundError:
        return None
    except ValidationError as error:
        raise ValueError(f"{name} is not a snapshot reference ({error})") from error


def purge_cached_extraction(container: ContainerClient, sha256: str) -> int:
    """Delete every cached extraction of this content (its text must not outlive the document)."""
    names = [b.name for b in container.list_blobs(name_starts_with=CACHE + sha256)]
    for name in names:
        container.delete_blob(name)
    return len(names)


def prune_snapshots(container: ContainerClient, keep: int, also_keep: set[str]) -> list[str]:
    """Delete all but the newest `keep` snapshots (text and manifest) and those named in `also_keep`
    (e.g. the one the serving model was trained on). Returns the snapshots deleted."""
    snapshots = sorted(
        {
            snapshot_file(b.name.removeprefix(PROCESSED))
            for b in container.list_blobs(name_starts_with=SNAPSHOT_OUTPUT_PREFIX)
        }
    )
    kept = set(snapshots[-keep:] if keep > 0 else snapshots) | {s for s in also_keep if s}
    deleted = []
    for snapshot in snapshots:
        if snapshot in kept:
            continue
        for name in (PROCESSED + snapshot, manifest_name(snapshot)):
            try:
                container.delete_blob(name)
            except ResourceNotFoundError:
                pass
        deleted.append(snapshot)
    return deleted
