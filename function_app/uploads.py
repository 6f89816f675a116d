"""Following uploads under inputs/: from the storage account's blob events, or by scanning for missed ones."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from function_app import manifests
from function_app.status_store import StatusStore, UploadedBlob
from pipeline_contracts.blob_layout import INPUTS

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


# Longest file name (one path segment) Linux file systems take, in UTF-8 bytes: the local job and AML's
# mount of inputs/ both turn each blob into a file, so a longer segment could never be extracted.
MAX_SEGMENT_BYTES = 255


def unusable_name(name: str) -> str | None:
    """Why a blob name under inputs/ cannot become a file in the job's input folder (None if it can)."""
    segments = name.split("/")
    if any(s in ("", ".", "..") for s in segments):
        return (
            "its name has an empty, '.' or '..' path segment, which could point outside the input folder; "
            "rename the blob (e.g. to inputs/<name>.pdf)"
        )
    longest = max(segments, key=lambda s: len(s.encode("utf-8")))
    if len(longest.encode("utf-8")) > MAX_SEGMENT_BYTES:
        return (
            f"a part of its name is {len(longest.encode('utf-8'))} bytes in UTF-8, over the {MAX_SEGMENT_BYTES} a "
            "file name may have, so it cannot be extracted; rename the blob to a shorter name"
        )
    return None


class Unrecordable(Exception):
    """A blob that cannot be recorded as a document; the message says why and what to do."""


def _unreadable(error: Exception) -> str:
    code = getattr(error, "error_code", None)  # storage's own code, e.g. BlobArchived
    first_line = (str(error).splitlines() or [""])[0]
    return (
        f"could not be read or recorded ({type(error).__name__}{f' {code}' if code else ''}: {first_line}); "
        "tried again every minute. If the blob is in the Archive tier, rehydrate it to Hot or Cool."
    )


def record(store: StatusStore, container: ContainerClient, name: str, now: datetime, etag: str = "") -> str:
    """Record one upload. Never raises for this blob's sake: a blob that cannot be recorded (unusable name,
    unreadable bytes, a failing write) is kept as a problem with the reason, and retried by the next scan."""
    try:
        reason = unusable_name(name)
        if reason:
            raise Unrecordable(reason)
        upload = read_upload(container, name)
        if upload is None:
            log.warning("upload %s vanished before it could be recorded", name)
            return "missing"
        outcome = store.record_upload(upload, now)
    except Exception as e:  # noqa: BLE001 - one blob must never stop the others (or the tick)
        reason = str(e) if isinstance(e, Unrecordable) else _unreadable(e)
        log.warning("upload %s not recorded: %s", name, reason)
        try:
            store.record_problem(name, etag, reason, now)
        except Exception:  # noqa: BLE001 - the log above still says it
            log.exception("could not record the problem with upload %s", name)
        return "problem"
    store.clear_problem(name)
    log.info("upload %s (sha256 %s): %s", name, upload.sha256[:12], outcome)
    return outcome


def remove(store: StatusStore, container: ContainerClient, name: str, now: datetime) -> str:
    """The blob `name` left inputs/: mark it removed and purge its content's extraction cache entry
    once no other name holds that content (so its text leaves storage with the next snapshots)."""
    store.clear_problem(name)
    gone = store.mark_removed(name, now)
    if gone:
        manifests.purge_cached_extraction(container, gone)
    return "removed"


def delete(store: StatusStore, container: ContainerClient, name: str, now: datetime) -> str:
    """Delete the upload itself (the API's and UI's delete), then forget it as a removal made elsewhere."""
    try:
        container.delete_blob(INPUTS + name)
    except ResourceNotFoundError:
        pass  # already gone: removing the record is all that is left
    return remove(store, container, name, now)


# Event Grid's subject for a blob event (Microsoft.Storage.BlobCreated / BlobDeleted, Event Grid schema).
_SUBJECT = "/blobServices/default/containers/{container}/blobs/"
CREATED, DELETED = "Microsoft.Storage.BlobCreated", "Microsoft.Storage.BlobDeleted"


def follow_event(
    store: StatusStore, container: ContainerClient, container_name: str, event_type: str, subject: str, now: datetime
) -> str:
    """One blob event: an upload under inputs/ is recorded (or reported as a problem, see record), a deleted
    one marked removed. Events outside inputs/ are ignored; anything missed is found by the next scan."""
    try:
        name = input_name(subject.removeprefix(_SUBJECT.format(container=container_name)), container_name)
    except ValueError as e:
        log.info("ignoring %s for %s: %s", event_type, subject, e)
        return "ignored"
    if event_type == CREATED:
        return record(store, container, name, now)
    if event_type == DELETED:
        # Events may arrive out of order: a name uploaded again since this delete stays recorded.
        if container.get_blob_client(INPUTS + name).exists():
            return record(store, container, name, now)
        return remove(store, container, name, now)
    log.info("ignoring event %s for %s", event_type, subject)
    return "ignored"


def scan(store: StatusStore, container: ContainerClient, now: datetime) -> dict[str, str]:
    """Follow inputs/: record every blob whose name and ETag are not in the table yet (missed events),
    and mark removed the recorded ones no longer there (deleted or renamed elsewhere)."""
    known = store.known_blobs()
    problems = {p["name"]: p["etag"] for p in store.problems()}
    outcomes, listed = {}, set()
    for props in container.list_blobs(name_starts_with=INPUTS):
        name, etag = props.name.removeprefix(INPUTS), props.etag.strip('"')
        listed.add(name)
        if not name or known.get(name) == etag:
            continue
        if problems.get(name) == etag and unusable_name(name):
            continue  # reported already; only a rename (a new blob) can change that
        outcomes[name] = record(store, container, name, now, etag)
    for name in sorted(known.keys() - listed):
        try:
            # Listed before an upload the trigger recorded meanwhile? Only a blob really gone is removed.
            if not container.get_blob_client(INPUTS + name).exists():
                outcomes[name] = remove(store, container, name, now)
        except Exception:  # noqa: BLE001 - retried by the next scan; the others go on
            log.exception("could not mark %s removed", name)
    for name in problems.keys() - listed:
        store.clear_problem(name)
    return outcomes
