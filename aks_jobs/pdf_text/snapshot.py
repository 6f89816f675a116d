"""Write an immutable, timestamped snapshot and its manifest; never overwrite an earlier one.

OUTPUT/combined_data_<UTC yyyymmdd_HHMMSS>.txt and OUTPUT/combined_data_<same>.manifest.json.
Readers take the lexicographically last name as the newest, so a new snapshot must sort last: its
name is claimed with an exclusive create, waiting for the next second if that name is taken.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from pipeline_contracts import blob_layout
from pipeline_contracts.blob_layout import SNAPSHOT_PREFIX, snapshot_stem
from pipeline_contracts.snapshot_manifest import SnapshotManifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    text: Path
    manifest: Path
    created_utc: str  # ISO 8601, second precision, "Z"


def newest_stamp(folder: Path) -> datetime | None:
    stamps = [stamp for path in folder.glob(SNAPSHOT_PREFIX + "*") if (stamp := blob_layout.stamp_of(path.name))]
    return max(stamps, default=None)


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _sleep_to_next_second() -> None:
    time.sleep(1.0 - time.time() % 1.0 + 0.001)


def _claim(folder: Path) -> tuple[datetime, Path, TextIO]:
    """Exclusively create the text file of a free name that sorts after every existing snapshot."""
    while True:
        moment = _utc_now()
        newest = newest_stamp(folder)
        if newest is not None and newest > moment:
            # Another writer's clock is ahead of ours: still sort last, or training would skip this one.
            log.warning("clock is behind the newest snapshot (%s); naming this one a second after it", newest)
            moment = newest + timedelta(seconds=1)
        if newest is None or moment > newest:
            text_path = folder / f"{snapshot_stem(moment)}.txt"
            try:
                return moment, text_path, text_path.open("x", encoding="utf-8", newline="\n")
            except FileExistsError:
                pass  # another writer claimed this second first
        _sleep_to_next_second()


def write_snapshot(folder: Path, text: str, manifest_for: Callable[[str, str], SnapshotManifest]) -> Snapshot:
    """Write `text` and then the manifest built by manifest_for(snapshot_file_name, created_utc).

    The manifest is written last, so its presence means the snapshot is complete; if writing fails
    (a full disk, say) the files this call created are removed, so no half snapshot is left newest.
    """
    folder.mkdir(parents=True, exist_ok=True)
    moment, text_path, handle = _claim(folder)
    created_utc = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest_path = text_path.with_name(blob_layout.manifest_file(text_path.name))
    created = [text_path]
    try:
        with handle:
            handle.write(text)
        with manifest_path.open("x", encoding="utf-8", newline="\n") as out:
            created.append(manifest_path)
            out.write(manifest_for(text_path.name, created_utc).model_dump_json(indent=2) + "\n")
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise
    return Snapshot(text=text_path, manifest=manifest_path, created_utc=created_utc)
