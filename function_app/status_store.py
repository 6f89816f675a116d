"""The status Table: uploaded documents, runs and the one current-state row the UI reads.

One table, five partitions:
- `blob`     one row per blob name under inputs/ (the name index): ETag, sha256, upload time, and the
             preprocess outcome for that file (status, messages) once a run has extracted it. RowKey is
             the sha256 of the name (any valid blob name fits; keys hold 1 KiB), the name a property.
             A deleted or renamed blob keeps its row with `removed_at` set (no run covers it again).
- `document` one row per distinct CONTENT (RowKey = sha256) with every name it was uploaded under.
             Same content under two names is one document, so it is trained on once and never
             triggers a run of its own. `run_id` is the first run that trained on this content and
             ended Deployed or Rejected; empty = not trained yet. A run that ended Failed or
             RolledBack gives its contents back: `attempts`, `retry_at` and `last_error` say when the
             next run may take them and why the last one did not.
- `run`      one row per run (state machine, every transition with its time); the newest KEEP_RUNS
             are kept (plus the active and the serving run).
- `problem`  one row per blob under inputs/ that could not be recorded (unusable name, unreadable
             bytes), with the reason, so it is reported instead of stopping anything; keyed like `blob`.
- `state`    the single `current` row: the active run (claimed with an ETag condition so two
             Function instances cannot both start one), the last outcome, the serving model.
Writes are MERGE upserts; read-modify-write of shared rows uses ETag conditions and retries.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from urllib.parse import quote, unquote

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from function_app.run_states import RunState
from pipeline_contracts.snapshot_manifest import SnapshotManifest

BLOB, DOCUMENT, RUN, STATE, PROBLEM = "blob", "document", "run", "state", "problem"
CURRENT = "current"
# A Table string property holds 64 KiB (32K UTF-16 chars); keep JSON lists well below.
_MAX_JSON_CHARS = 30_000
_ETAG_ATTEMPTS = 20


def _key(name: str) -> str:
    """RowKey of a blob name: its sha256. Keys hold at most 1 KiB and no / \\ # ? or control characters,
    while a blob name may have 1024 characters of any script; 64 hex digits always fit."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def _legacy_key(name: str) -> str:
    # Rows written before names were hashed: the percent-encoded name.
    return quote(name, safe="")


def _name(entity: dict) -> str:
    return entity.get("name") or unquote(entity["RowKey"])


def _iso(t: datetime) -> str:
    return t.isoformat()


# A document's failed attempts, as a content with none has them.
_NO_ATTEMPTS = {"attempts": 0, "retry_at": "", "last_error": "", "last_attempt_run": ""}


def _capped_json(items: list) -> str:
    """JSON of a list, cut (with a marker) if it would not fit in one Table property."""
    text = json.dumps(items)
    while len(text) > _MAX_JSON_CHARS and items:
        items = items[: len(items) // 2]
        text = json.dumps(items + [f"... list cut to {len(items)} entries to fit the status table"])
    return text


@dataclass(frozen=True)
class UploadedBlob:
    name: str  # relative to inputs/
    etag: str
    sha256: str
    size: int
    uploaded_at: datetime


@dataclass
class Run:
    id: str
    state: RunState  # stored as its value: rows written as plain strings read back the same
    created_at: str
    trigger: str = "uploads"  # uploads | manual
    train: dict = field(default_factory=dict)  # the training choices it used (TrainChoices); {} before they existed
    updated_at: str = ""
    job_id: str = ""
    error: str = ""
    transitions: list[dict] = field(default_factory=list)  # [{state, at, detail}]
    documents: list[str] = field(default_factory=list)  # names of every document the run covers
    new_documents: list[str] = field(default_factory=list)  # names whose content is new in this run
    new_contents: list[str] = field(default_factory=list)  # sha256 of every content not trained before it
    metrics: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    snapshot: str = ""
    model_name: str = ""
    model_version: str = ""
    deployment: str = ""
    deploy_started_at: str = ""
    retry: dict = field(default_factory=dict)  # {attempts, next_attempt_at, last_error}
    events: list[dict] = field(default_factory=list)  # retries and other notes, with times
    etag: str = field(default="", repr=False)  # of the row this copy was read from / last wrote; not stored

    _JSON = (
        "train",
        "transitions",
        "documents",
        "new_documents",
        "new_contents",
        "metrics",
        "evaluation",
        "retry",
        "events",
    )

    def to_entity(self) -> dict:
        entity = {"PartitionKey": RUN, "RowKey": self.id}
        for name, value in asdict(self).items():
            if name in ("id", "etag"):
                continue
            if name in self._JSON:
                entity[name] = _capped_json(value) if isinstance(value, list) else json.dumps(value)
            else:
                entity[name] = value
        return entity

    @classmethod
    def from_entity(cls, entity: dict) -> Run:
        values = {"id": entity["RowKey"]}
        for f in fields(cls):
            if f.name in entity:
                raw = entity[f.name]
                values[f.name] = json.loads(raw) if f.name in cls._JSON else raw
        values["state"] = RunState(values["state"])
        return cls(**values, etag=entity.metadata.get("etag", "") if hasattr(entity, "metadata") else "")

    def to_api(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "etag"}


class RunChanged(Exception):
    """The run's row changed since this copy of it was read: another instance advanced it."""


@dataclass(frozen=True)
class Current:
    active_run_id: str = ""
    last_run_id: str = ""
    last_run_state: str = ""
    serving_model_name: str = ""
    serving_model_version: str = ""
    serving_deployment: str = ""
    previous_deployment: str = ""  # kept at 0% traffic as the rollback target
    serving_run_id: str = ""  # the run whose model serves (kept when old runs are pruned)
    cancel_run_id: str = ""  # a cancel asked for through the API, carried out by the next tick
    serving_snapshot: str = ""  # the snapshot the serving model was trained on (kept by retention)
    scoring_url: str = ""
    # The last rollback through the API: when, who asked, and the deployment the traffic left.
    rollback_at: str = ""
    rollback_by: str = ""
    rollback_from: str = ""
    updated_at: str = ""

    @classmethod
    def from_entity(cls, entity: dict) -> Current:
        return cls(**{f.name: entity.get(f.name, "") or "" for f in fields(cls)})


class StatusStore:
    def __init__(self, table: TableClient):
        self.table = table

    @classmethod
    def open(cls, service: TableServiceClient, table_name: str) -> StatusStore:
        return cls(service.create_table_if_not_exists(table_name))

    # ---- generic helpers -------------------------------------------------------------------
    def _get(self, pk: str, rk: str) -> dict | None:
        try:
            return self.table.get_entity(pk, rk)
        except ResourceNotFoundError:
            return None

    def _query(self, pk: str, extra: str = "", **params: str) -> list[dict]:
        flt = "PartitionKey eq @pk" + (f" and {extra}" if extra else "")
        return list(self.table.query_entities(flt, parameters={"pk": pk, **params}))

    def _merge(self, pk: str, rk: str, values: dict) -> None:
        self.table.upsert_entity({"PartitionKey": pk, "RowKey": rk, **values}, mode=UpdateMode.MERGE)

    def _update_if_unchanged(self, pk: str, rk: str, change: Callable[[dict | None], dict | None]) -> dict | None:
        """Read-modify-write one row under an ETag condition, retrying when someone else wrote first.

        `change` gets the row (None if missing) and returns the properties to write, or None to
        leave the row alone. Returns what was written (None if nothing).
        """
        for _ in range(_ETAG_ATTEMPTS):
            entity = self._get(pk, rk)
            values = change(entity)
            if values is None:
                return None
            try:
                if entity is None:
                    self.table.create_entity({"PartitionKey": pk, "RowKey": rk, **values})
                else:
                    self.table.update_entity(
                        {"PartitionKey": pk, "RowKey": rk, **values},
                        mode=UpdateMode.MERGE,
                        etag=entity.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                return values
            except (ResourceModifiedError, ResourceExistsError):
                continue  # lost the race: read again
        raise RuntimeError(f"status table row {pk}/{rk} kept changing under {_ETAG_ATTEMPTS} attempts")

    # ---- documents -------------------------------------------------------------------------
    def _blob_row(self, name: str) -> dict | None:
        row = self._get(BLOB, _key(name))
        legacy = _legacy_key(name)
        # A legacy row exists only if its key fitted (1 KiB of UTF-16); a longer key is refused, not missing.
        if row is None and len(legacy) <= 512:
            row = self._get(BLOB, legacy)
        return row

    def _write_blob(self, name: str, existing: dict | None, values: dict) -> None:
        self._merge(BLOB, _key(name), {"name": name, **values})
        if existing is not None and existing["RowKey"] != _key(name):  # a legacy row: now rewritten
            self.table.delete_entity(BLOB, existing["RowKey"])

    def _present_blobs(self) -> list[dict]:
        return [e for e in self._query(BLOB) if not e.get("removed_at")]

    def known_blobs(self) -> dict[str, str]:
        """Blob name -> ETag for every upload recorded so far and still present."""
        return {_name(e): e["etag"] for e in self._present_blobs()}

    def record_upload(self, blob: UploadedBlob, now: datetime) -> str:
        """Record one upload; idempotent. Returns what it was:

        duplicate        the same event again (same name and ETag): nothing changes
        same_content     same name re-uploaded with identical bytes: ETag updated, no new run
        known_content    a new name for content already recorded: added to that document, no new run
        new_content      content never seen (a new file, or a name overwritten with new bytes)
        """
        existing = self._blob_row(blob.name)
        removed = bool(existing and existing.get("removed_at"))
        if existing and not removed and existing["etag"] == blob.etag:
            return "duplicate"
        if existing and not removed and existing["sha256"] == blob.sha256:
            self._write_blob(blob.name, existing, {"etag": blob.etag, "recorded_at": _iso(now)})
            return "same_content"
        outcome = self._add_name(blob)
        if existing and not removed:  # the name now holds other bytes: the old content loses this name
            self._remove_name(existing["sha256"], blob.name)
        # Each new content under a name is a new version of that document.
        version = int(existing.get("version", 1)) + (existing["sha256"] != blob.sha256) if existing else 1
        # Written last: it is the idempotency marker, so a crash before it just redoes the above.
        self._write_blob(
            blob.name,
            existing,
            {
                "etag": blob.etag,
                "sha256": blob.sha256,
                "size": blob.size,
                "uploaded_at": _iso(blob.uploaded_at),
                "recorded_at": _iso(now),
                "status": "",
                "messages": "[]",
                "snapshot": "",
                "removed_at": "",
                "version": version,
            },
        )
        return outcome

    def mark_removed(self, name: str, now: datetime) -> str | None:
        """The blob `name` is gone from inputs/ (deleted or renamed): no later run covers it. Returns the
        sha256 whose content no name holds any more (its extraction cache entry can go), else None."""
        existing = self._blob_row(name)
        if existing is None or existing.get("removed_at"):
            return None
        left = self._remove_name(existing["sha256"], name)
        self._write_blob(name, existing, {"removed_at": _iso(now)})
        return existing["sha256"] if left == [] else None

    def _add_name(self, blob: UploadedBlob) -> str:
        outcome = {}

        def change(entity: dict | None) -> dict | None:
            if entity is None:
                outcome["v"] = "new_content"
                return {
                    "names": json.dumps([blob.name]),
                    "size": blob.size,
                    "first_uploaded_at": _iso(blob.uploaded_at),
                    "last_uploaded_at": _iso(blob.uploaded_at),
                    "run_id": "",
                }
            names = json.loads(entity["names"])
            # Content whose every name was overwritten is no longer in inputs/: seeing it again is new.
            outcome["v"] = "known_content" if names else "new_content"
            if blob.name in names:
                return None
            return {
                "names": _capped_json(sorted(names + [blob.name])),
                "last_uploaded_at": max(entity["last_uploaded_at"], _iso(blob.uploaded_at)),
            }

        self._update_if_unchanged(DOCUMENT, blob.sha256, change)
        return outcome["v"]

    def _remove_name(self, sha256: str, name: str) -> list[str] | None:
        """Drop `name` from the content's names; returns the names left (None if no such content)."""
        left = {}

        def change(entity: dict | None) -> dict | None:
            if entity is None:
                return None
            names = left["v"] = [n for n in json.loads(entity["names"]) if n != name]
            # With no name left the content is gone from inputs/; forget that it was trained on (and
            # its failed attempts), so that uploading it again counts as new.
            return {"names": json.dumps(names), **({} if names else {"run_id": "", **_NO_ATTEMPTS})}

        self._update_if_unchanged(DOCUMENT, sha256, change)
        return left.get("v")

    def pending_documents(self) -> list[dict]:
        """Documents (content) in inputs/ no run has trained on yet: names, last_uploaded_at, and the
        failed attempts so far (attempts, retry_at, last_error)."""
        rows = self._query(DOCUMENT, "run_id eq @empty", empty="")
        return [
            {
                "sha256": e["RowKey"],
                "names": json.loads(e["names"]),
                "last_uploaded_at": e["last_uploaded_at"],
                **{k: e.get(k) or v for k, v in _NO_ATTEMPTS.items()},
            }
            for e in rows
            if json.loads(e["names"])
        ]

    def mark_trained_by(self, run_id: str, sha256s: list[str]) -> None:
        """The run ended Deployed or Rejected: its contents count as trained (idempotent)."""
        for sha in sha256s:
            self._update_if_unchanged(
                DOCUMENT,
                sha,
                lambda e: None if e is None or e.get("run_id") else {"run_id": run_id, **_NO_ATTEMPTS},
            )

    def give_back(self, run_id: str, sha256s: list[str], reason: str, retry_at: Callable[[int], datetime]) -> None:
        """The run ended Failed or RolledBack: its untrained contents wait again, one attempt more.

        `retry_at(attempts)` is when the next run may take them. Counted once per run (idempotent)."""

        def change(entity: dict | None) -> dict | None:
            if entity is None or entity.get("run_id") or entity.get("last_attempt_run") == run_id:
                return None
            attempts = int(entity.get("attempts") or 0) + 1
            return {
                "attempts": attempts,
                "retry_at": _iso(retry_at(attempts)),
                "last_error": reason[:2000],
                "last_attempt_run": run_id,
            }

        for sha in sha256s:
            self._update_if_unchanged(DOCUMENT, sha, change)

    def document_names(self) -> list[str]:
        """Every name in inputs/ recorded so far and not removed (what a run submitted now will cover)."""
        return sorted(_name(e) for e in self._present_blobs())

    def record_extraction(self, manifest: SnapshotManifest) -> None:
        """Per-file outcome of preprocess (manifest documents: name, status, messages) on the blob rows."""
        for doc in manifest.documents:
            existing = self._blob_row(doc.name)
            if existing is None:
                continue  # a file in inputs/ that no event or scan has reached yet
            self._write_blob(
                doc.name,
                existing,
                {
                    "status": doc.status,
                    "messages": _capped_json(doc.messages),
                    "snapshot": manifest.snapshot,
                    "pages": doc.pages,
                    "chars": doc.chars,
                },
            )

    def documents(self) -> list[dict]:
        """Every upload still present with its content's document row, for the API."""
        contents = {e["RowKey"]: e for e in self._query(DOCUMENT)}
        out = []
        for e in self._present_blobs():
            doc = contents.get(e["sha256"], {})
            name = _name(e)
            out.append(
                {
                    "name": name,
                    "etag": e["etag"],
                    "sha256": e["sha256"],
                    "version": int(e.get("version", 1)),
                    "bytes": e.get("size", 0),
                    "uploaded_at": e["uploaded_at"],
                    "recorded_at": e["recorded_at"],
                    "same_content_as": [n for n in json.loads(doc.get("names", "[]")) if n != name],
                    "trained_by_run": doc.get("run_id", ""),
                    **{k: doc.get(k) or v for k, v in _NO_ATTEMPTS.items()},
                    "extraction": e.get("status", ""),
                    "messages": json.loads(e.get("messages", "[]")),
                    "snapshot": e.get("snapshot", ""),
                    # None until a run has extracted the file (0 pages is a real outcome).
                    "pages": e.get("pages"),
                    "chars": e.get("chars"),
                }
            )
        return sorted(out, key=lambda d: d["uploaded_at"])

    # ---- blobs that could not be recorded ----------------------------------------------------
    def record_problem(self, name: str, etag: str, reason: str, now: datetime) -> None:
        """`name` under inputs/ could not be recorded; kept with the reason until it is or the blob goes."""
        self._merge(PROBLEM, _key(name), {"name": name, "etag": etag, "reason": reason, "seen_at": _iso(now)})

    def clear_problem(self, name: str) -> None:
        self.table.delete_entity(PROBLEM, _key(name))  # no error when the row is absent

    def problems(self) -> list[dict]:
        """Blobs under inputs/ that could not be recorded: name, reason, when last tried."""
        rows = [
            {"name": e["name"], "etag": e["etag"], "reason": e["reason"], "seen_at": e["seen_at"]}
            for e in self._query(PROBLEM)
        ]
        return sorted(rows, key=lambda p: p["name"])

    # ---- runs ------------------------------------------------------------------------------
    def save_run(self, run: Run) -> None:
        """Write the run, only over the row this copy was read from (ETag): two Function instances
        advancing the same run, the slower one's stale copy must never overwrite what the other wrote
        (e.g. turn an ended run back into a running one). Raises RunChanged then."""
        try:
            if run.etag:
                written = self.table.update_entity(
                    run.to_entity(), mode=UpdateMode.MERGE, etag=run.etag, match_condition=MatchConditions.IfNotModified
                )
            else:
                written = self.table.create_entity(run.to_entity())
        except (ResourceModifiedError, ResourceExistsError) as e:
            raise RunChanged(f"run {run.id} was changed by another instance") from e
        run.etag = written.get("etag") or ""

    def get_run(self, run_id: str) -> Run | None:
        entity = self._get(RUN, run_id)
        return Run.from_entity(entity) if entity else None

    def deployed_run(self, deployment: str) -> Run | None:
        """The run that ended Deployed with `deployment` (None when none, or its row was pruned)."""
        rows = self._query(RUN, "deployment eq @d and state eq @s", d=deployment, s=RunState.DEPLOYED.value)
        return Run.from_entity(rows[0]) if rows else None

    def runs(self) -> list[Run]:
        """Every run, newest first."""
        return sorted((Run.from_entity(e) for e in self._query(RUN)), key=lambda r: r.created_at, reverse=True)

    def run_state(self, run_id: str) -> str | None:
        """Only the state of one run (None if there is no such run, e.g. pruned)."""
        try:
            return self.table.get_entity(RUN, run_id, select=["state"]).get("state")
        except ResourceNotFoundError:
            return None

    def run_ids(self) -> list[str]:
        """Every run id (they sort by creation time), newest first; only the keys are read."""
        rows = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": RUN}, select=["RowKey"])
        return sorted((e["RowKey"] for e in rows), reverse=True)

    def runs_page(self, limit: int, before: str = "") -> tuple[list[Run], str]:
        """Up to `limit` runs older than run id `before` (or the newest), newest first, and the cursor
        for the next page ("" when there is none)."""
        ids = [i for i in self.run_ids() if not before or i < before]
        page = [run for run in (self.get_run(i) for i in ids[:limit]) if run is not None]
        return page, (ids[limit - 1] if len(ids) > limit else "")

    def prune_runs(self, keep: int, protect: set[str]) -> list[str]:
        """Delete all but the newest `keep` runs, never one in `protect`; returns the ids deleted."""
        doomed = [i for i in self.run_ids()[keep:] if i not in protect]
        for run_id in doomed:
            self.table.delete_entity(RUN, run_id)
        return doomed

    # ---- current state ---------------------------------------------------------------------
    def current(self) -> Current:
        entity = self._get(STATE, CURRENT)
        return Current.from_entity(entity) if entity else Current()

    def claim_active(self, run_id: str, now: datetime) -> bool:
        """Make `run_id` the single active run, unless another is active (ETag-guarded)."""

        def change(entity: dict | None) -> dict | None:
            if entity is not None and entity.get("active_run_id"):
                return None
            return {"active_run_id": run_id, "updated_at": _iso(now)}

        return self._update_if_unchanged(STATE, CURRENT, change) is not None

    def finish_active(self, run: Run, now: datetime, serving: dict | None = None) -> None:
        """Release the active slot after a terminal state; record the outcome and the serving model."""

        def change(entity: dict | None) -> dict | None:
            values = {"last_run_id": run.id, "last_run_state": run.state, "updated_at": _iso(now), **(serving or {})}
            if entity is None or entity.get("active_run_id") == run.id:
                values["active_run_id"] = ""
            return values

        self._update_if_unchanged(STATE, CURRENT, change)

    def replace_serving(self, seen: Current, serving: dict[str, str], now: datetime) -> bool:
        """Write what serves, only if the serving and previous deployments are still those of `seen`
        (ETag-guarded); False when they changed meanwhile."""

        def change(entity: dict | None) -> dict | None:
            now_current = Current.from_entity(entity) if entity else Current()
            if (now_current.serving_deployment, now_current.previous_deployment) != (
                seen.serving_deployment,
                seen.previous_deployment,
            ):
                return None
            return {**serving, "updated_at": _iso(now)}

        return self._update_if_unchanged(STATE, CURRENT, change) is not None

    def set_serving(self, now: datetime, **serving: str) -> None:
        self._merge(STATE, CURRENT, {**serving, "updated_at": _iso(now)})

    def request_cancel(self, run_id: str, now: datetime) -> None:
        self._merge(STATE, CURRENT, {"cancel_run_id": run_id, "updated_at": _iso(now)})
