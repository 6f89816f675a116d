"""Turn GET /api/status (and the record of the run it is about) into what the Knowledge Base shows:
one of the design's states with the facts a person wants next to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pipeline_contracts.api_responses import RunDetail, Status
from ui.times import clock, elapsed, parse

IDLE, IN_PROGRESS, DEPLOYED, FAILED = "Idle", "Training in progress", "New model deployed", "Failed"

# What each run step means to someone watching (run_states in function_app).
STEP_TEXT = {
    "Pending": "waiting for uploads to settle",
    "Submitted": "job submitted, waiting for compute",
    "Preprocessing": "extracting text from the PDFs",
    "Training": "fine-tuning GPT-2",
    "Evaluating": "evaluating the candidate against the serving model",
    "Deploying": "deploying the new model beside the serving one",
    "SmokeTest": "smoke-testing the new deployment",
}


@dataclass(frozen=True)
class StatusSummary:
    state: str  # Idle | Training in progress | New model deployed | Failed | anything newer, shown as is
    headline: str
    details: list[str] = field(default_factory=list)


def summarize(status: Status, run: RunDetail | None, now: datetime) -> StatusSummary:
    """`run` is GET /api/runs/{id} of the run the status is about (see `run_id`), None if there is none."""
    state = status.state or "Unknown"
    details: list[str] = []
    active, serving = status.active_run, status.serving_model
    if state == IN_PROGRESS and active:
        step = active.step
        headline = f"Training in progress: {step}"
        if step in STEP_TEXT:
            headline += f" ({STEP_TEXT[step]})"
        since = parse(active.since)
        if since:
            details.append(f"In this step for {elapsed(since, now)} (since {clock(since)}).")
        started = parse(run.created_at) if run else None
        if started:
            details.append(f"Run started {elapsed(started, now)} ago.")
        details.append(f"Run {active.id}.")
    elif state == DEPLOYED:
        headline = "New model deployed"
        if serving:
            headline += f": {serving.name} version {serving.version}"
        deployed_at = _reached(run, "Deployed")
        if deployed_at:
            details.append(f"Deployed {clock(deployed_at)} ({elapsed(deployed_at, now)} ago).")
    elif state == FAILED:
        reason = (run.error if run else "") or "no reason recorded"
        headline = f"Failed: {reason}"
        if serving:
            details.append(f"The serving model is unchanged: {serving.name} version {serving.version}.")
    elif state == IDLE:
        headline = "Idle"
        if run and run.state == "Rejected":
            details.append(f"The last run's candidate was not promoted: {_last_detail(run)}")
        if serving:
            details.append(f"Serving {serving.name} version {serving.version}.")
        else:
            details.append("No model deployed yet: upload PDFs to train the first one.")
    else:
        headline = state
    rollback = serving.last_rollback if serving else None
    if rollback:
        at = parse(rollback.at)
        when = f" {clock(at)} ({elapsed(at, now)} ago)" if at else ""
        details.append(
            f"Rolled back{when} by {rollback.by}: {serving.name} version {serving.version} ({serving.deployment}) "
            f"serves instead of {rollback.from_deployment}."
        )
    pending = status.pending_documents
    # While a run is Pending it is still gathering uploads: they belong to it, not to the next run.
    if pending and not (active and active.step == "Pending"):
        details.append(f"{pending} uploaded document(s) waiting for the next run.")
    failed = status.failed_documents
    if failed:
        details.append(
            f"{failed} document(s) failed in every run that tried them (see Documents for the reason); "
            f"a retrain or a new upload includes them again."
        )
    return StatusSummary(state, headline, details)


def run_id(status: Status) -> str | None:
    """The run whose record completes the status: the active one, else the last one."""
    run = status.active_run or status.last_run
    return run.id if run else None


def _reached(run: RunDetail | None, state: str) -> datetime | None:
    """When the run entered `state` (its last such transition)."""
    for transition in reversed(run.transitions if run else []):
        if transition.state == state:
            return parse(transition.at)
    return None


def _last_detail(run: RunDetail) -> str:
    return (run.transitions[-1].detail if run.transitions else "") or "no reason recorded"
