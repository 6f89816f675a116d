"""Where things live in the data container, and what they are called.

inputs/<name>                                   uploads (the UI never overwrites one)
processed/combined_data_<stamp>.txt             an immutable text snapshot (stamp: UTC yyyymmdd_HHMMSS)
processed/combined_data_<stamp>.manifest.json   its manifest, written last (its presence: the snapshot is whole)
processed/cache/<sha256>[.<limits>].json        preprocess's extraction cache (its default --cache)
runs/<run id>/snapshot/snapshot.json            which snapshot that run's preprocess wrote (snapshot_ref)
runs/<run id>/model/, runs/<run id>/evaluation/ the run's trained model and its evaluation.json

Snapshot names carry their UTC stamp, so they sort by time.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

INPUTS = "inputs/"
PROCESSED = "processed/"
RUNS = "runs/"

SNAPSHOT_PREFIX = "combined_data_"
SNAPSHOT_SUFFIX = ".txt"
MANIFEST_SUFFIX = ".manifest.json"
STAMP_FORMAT = "%Y%m%d_%H%M%S"
SNAPSHOT_PATTERN = rf"^{SNAPSHOT_PREFIX}\d{{8}}_\d{{6}}\{SNAPSHOT_SUFFIX}$"
SNAPSHOT_OUTPUT_PREFIX = PROCESSED + SNAPSHOT_PREFIX  # every snapshot's and manifest's blob name starts so
_STAMPED = re.compile(re.escape(SNAPSHOT_PREFIX) + r"(\d{8}_\d{6})(?:\.txt|\.manifest\.json)$")

CACHE_FOLDER = "cache"  # under processed/ (preprocess's default --cache: OUTPUT/cache)
CACHE = f"{PROCESSED}{CACHE_FOLDER}/"

# Each run's job outputs, under runs/<run id>/.
SNAPSHOT_REF_OUTPUT = "snapshot"
MODEL_OUTPUT = "model"
EVALUATION_OUTPUT = "evaluation"


def snapshot_stem(moment: datetime) -> str:
    """combined_data_<stamp> for a moment in UTC."""
    return SNAPSHOT_PREFIX + moment.strftime(STAMP_FORMAT)


def manifest_file(snapshot: str) -> str:
    """combined_data_X.manifest.json for snapshot combined_data_X.txt."""
    return snapshot.removesuffix(SNAPSHOT_SUFFIX) + MANIFEST_SUFFIX


def snapshot_file(name: str) -> str:
    """combined_data_X.txt for combined_data_X.txt or combined_data_X.manifest.json."""
    return name.removesuffix(MANIFEST_SUFFIX).removesuffix(SNAPSHOT_SUFFIX) + SNAPSHOT_SUFFIX


def stamp_of(name: str) -> datetime | None:
    """The UTC moment in a snapshot's or manifest's file name, or None for another name."""
    match = _STAMPED.match(name)
    return datetime.strptime(match.group(1), STAMP_FORMAT).replace(tzinfo=UTC) if match else None


def cache_entry(sha256: str, limits_key: str | None = None) -> str:
    """The cache file of one content: <sha256>.json, or <sha256>.<limits>.json for an outcome of those limits."""
    return f"{sha256}.{limits_key}.json" if limits_key else f"{sha256}.json"


def safe_run_id(run_id: str) -> str:
    """run_id as one path segment / job-name part: letters, digits, '_' and '-' only ("" if none is left)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", run_id).strip("-")


def run_output(run_id: str, output: str) -> str:
    """runs/<run id>/<output>/: where that run's job writes one of its outputs."""
    return f"{RUNS}{safe_run_id(run_id)}/{output}/"
