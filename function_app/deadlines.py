"""How long a run may stay in each state before the control plane stops it (plain logic, no I/O).

A job that no node picks up (Submitted) or a step that hangs would otherwise hold the one active-run
slot forever. Past its deadline the run's job is cancelled and the run ends with the reason; a run
in Deploying or SmokeTest is rolled back (the serving model stays).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from function_app import run_states as rs
from function_app.settings import Settings, setting_name
from function_app.status_store import Run

# State -> (Settings field, what the run was waiting for, in words).
_DEADLINES = {
    rs.SUBMITTED: ("queued_timeout_seconds", "still queued: no compute node started the job"),
    rs.PREPROCESSING: ("preprocess_timeout_seconds", "preprocess did not finish"),
    rs.TRAINING: ("train_timeout_seconds", "training did not finish"),
    rs.EVALUATING: ("evaluate_timeout_seconds", "evaluation did not finish"),
    rs.DEPLOYING: ("deploy_timeout_seconds", "the deployment did not become ready"),
    rs.SMOKE_TEST: ("deploy_timeout_seconds", "the deployment did not pass its smoke test"),
}
# Deploying and SmokeTest share one deadline, counted from the start of Deploying.
_SINCE = {rs.SMOKE_TEST: rs.DEPLOYING}


def entered(run: Run, state: str) -> datetime | None:
    """When the run last entered `state` (None if it never did)."""
    times = [t["at"] for t in run.transitions if t["state"] == state]
    return datetime.fromisoformat(times[-1]) if times else None


def overdue(run: Run, now: datetime, settings: Settings) -> str | None:
    """Why the run must be stopped now, or None while it is within its state's deadline."""
    if run.state not in _DEADLINES:
        return None
    field, what = _DEADLINES[run.state]
    since = entered(run, _SINCE.get(run.state, run.state))
    limit = getattr(settings, field)
    if since is None or now - since <= timedelta(seconds=limit):
        return None
    return f"deadline passed in {run.state}: {what} within {limit} s ({setting_name(field)})"
