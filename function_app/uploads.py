"""Recording uploads under inputs/: from a blob trigger event, or by scanning for missed ones."""
from __future__ import annotations

import hashlib
import logging
from datetime import datetime

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from function_app.status_store import StatusStore, UploadedBlob

INPUTS = "inputs/"
log = logging.getLogger(__name__)


def input_name(blob_path: str, container: str) -> str:
    """Name relative to inputs/ from what a trigger gives: '<container>/inputs/a.pdf' or 'inputs/a.pdf'."""
    path = blob_path.removeprefix(f"{container}/")
    if not path.startswith(INPUTS) or path == INPUTS:
        raise ValueError(f"blob '{blob_path}' is not under {container}/{INPUTS}; only uploads there are recorded")
    return path.removeprefix(INPUTS)


def read_upload(container: ContainerClient, name: str) -> UploadedBlob | None:
    """Hash the blob's bytes; ETag and time come from the same download, so they match the bytes."""
    try:
        stream = container.download_blob(INPUTS + name)
    except ResourceNotFoundError:
        return None  # deleted since the event; nothing to record
    digest = hashlib.sha256()
    size = 0
    for chunk in stream.chunks():
        digest.update(chunk)
        size += len(chunk)
    props = stream.properties
    return UploadedBlob(
        name=name, etag=props.etag.strip('"'), sha256=digest.hexdigest(), size=size, uploaded_at=props.last_modified
    )


def record(store: StatusStore, container: ContainerClient, name: str, now: datetime) -> str:
    upload = read_upload(container, name)
    if upload is None:
        log.warning("upload %s vanished before it could be recorded", name)
        return "missing"
    outcome = store.record_upload(upload, now)
    log.info("upload %s (sha256 %s): %s", name, upload.sha256[:12], outcome)
    return outcome


def scan(store: StatusStore, container: ContainerClient, now: datetime) -> dict[str, str]:
    """Record every blob under inputs/ whose name and ETag are not in the table yet (missed events)."""
    known = store.known_blobs()
    outcomes = {}
    for props in container.list_blobs(name_starts_with=INPUTS):
        name = props.name.removeprefix(INPUTS)
        if name and known.get(name) != props.etag.strip('"'):
            outcomes[name] = record(store, container, name, now)
    return outcomes
