"""When a document whose run failed is tried again, and what the API says about each document.

A document counts as trained only once a run that included it ended Deployed or Rejected. A run
that ended Failed or RolledBack gives its documents back: the next run may take them after a
backoff (DOCUMENT_RETRY_SECONDS, doubling per attempt); after DOCUMENT_MAX_ATTEMPTS they wait, shown
as failed with the last reason, until a retrain or a new upload starts a run that includes them.
Plain logic over the status store's document dicts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from function_app import run_states as rs
from function_app.settings import Settings

WAITING = "waiting for the next run"
IN_RUN = "in the active run"
RETRYING = "waiting to retry"
FAILED = "failed"
INCLUDED = "included"
_MAX_BACKOFF_S = 24 * 3600


def retry_at(attempts: int, now: datetime, settings: Settings) -> datetime:
    delay = min(settings.document_retry_seconds * 2 ** max(attempts - 1, 0), _MAX_BACKOFF_S)
    return now + timedelta(seconds=delay)


def gave_up(doc: dict, settings: Settings) -> bool:
    return int(doc.get("attempts") or 0) >= settings.document_max_attempts


def due(doc: dict, now: datetime, settings: Settings) -> bool:
    """May this pending document start a run now (it is new, or its backoff is over and attempts remain)?"""
    if gave_up(doc, settings):
        return False
    return not doc.get("retry_at") or now >= datetime.fromisoformat(doc["retry_at"])


def state_of(doc: dict, active_contents: set[str], settings: Settings) -> str:
    """What /api/documents says about one document (store.documents() row)."""
    if doc.get("trained_by_run"):
        return INCLUDED
    if doc["sha256"] in active_contents:
        return IN_RUN
    if gave_up(doc, settings):
        return FAILED
    if doc.get("attempts"):
        return RETRYING
    return WAITING


def ended_well(state: str) -> bool:
    """A run ending so counts its documents as trained; any other end gives them back."""
    return state in rs.ENDED_WELL
