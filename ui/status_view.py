"""Turn GET /api/status (and the record of the run it is about) into what the Knowledge Base shows:
one of the design's states with the facts a person wants next to it."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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


def summarize(status: dict[str, Any], run: dict[str, Any] | None, now: datetime) -> StatusSummary:
    """`run` is GET /api/runs/{id} of the run the status is about (see `run_id`), None if there is none."""
    state = status.get("state") or "Unknown"
    details: list[str] = []
    active = status.get("active_run")
    serving = status.get("serving_model")
    if state == IN_PROGRESS and active:
        step = active.get("step", "")
        headline = f"Training in progress: {step}"
        if step in STEP_TEXT:
            headline += f" ({STEP_TEXT[step]})"
        since = parse(active.get("since"))
        if since:
            details.append(f"In this step for {elapsed(since, now)} (since {clock(since)}).")
        started = parse((run or {}).get("created_at"))
        if started:
            details.append(f"Run started {elapsed(started, now)} ago.")
        details.append(f"Run {active.get('id')}.")
    elif state == DEPLOYED:
        headline = "New model deployed"
        if serving:
            headline += f": {serving.get('name')} version {serving.get('version')}"
        deployed_at = _reached(run, "Deployed")
        if deployed_at:
            details.append(f"Deployed {clock(deployed_at)} ({elapsed(deployed_at, now)} ago).")
    elif state == FAILED:
        reason = (run or {}).get("error") or "no reason recorded"
        headline = f"Failed: {reason}"
        if serving:
            details.append(f"The serving model is unchanged: {serving.get('name')} version {serving.get('version')}.")
    elif state == IDLE:
        headline = "Idle"
        if run and run.get("state") == "Rejected":
            details.append(f"The last run's candidate was not promoted: {_last_detail(run)}")
        if serving:
            details.append(f"Serving {serving.get('name')} version {serving.get('version')}.")
        else:
            details.append("No model deployed yet: upload PDFs to train the first one.")
    else:
        headline = state
    pending = status.get("pending_documents")
    # While a run is Pending it is still gathering uploads: they belong to it, not to the next run.
    if pending and not (active and active.get("step") == "Pending"):
        details.append(f"{pending} uploaded document(s) waiting for the next run.")
    failed = status.get("failed_documents")
    if failed:
        details.append(f"{failed} document(s) failed in every run that tried them (see Documents for the reason); "
                       f"a retrain or a new upload includes them again.")
    return StatusSummary(state, headline, details)


def run_id(status: dict[str, Any]) -> str | None:
    """The run whose record completes the status: the active one, else the last one."""
    run = status.get("active_run") or status.get("last_run") or {}
    return run.get("id") or None


def _reached(run: dict[str, Any] | None, state: str) -> datetime | None:
    """When the run entered `state` (its last such transition)."""
    for transition in reversed((run or {}).get("transitions", [])):
        if transition.get("state") == state:
            return parse(transition.get("at"))
    return None


def _last_detail(run: dict[str, Any]) -> str:
    transitions = run.get("transitions") or [{}]
    return transitions[-1].get("detail") or "no reason recorded"
