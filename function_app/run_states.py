"""The run state machine's states and what the status API shows for them."""
from __future__ import annotations

PENDING = "Pending"
SUBMITTED = "Submitted"
PREPROCESSING = "Preprocessing"
TRAINING = "Training"
EVALUATING = "Evaluating"
DEPLOYING = "Deploying"
SMOKE_TEST = "SmokeTest"
REJECTED = "Rejected"
DEPLOYED = "Deployed"
ROLLED_BACK = "RolledBack"
FAILED = "Failed"

# In the order a successful run passes through them.
ORDER = (PENDING, SUBMITTED, PREPROCESSING, TRAINING, EVALUATING, DEPLOYING, SMOKE_TEST, DEPLOYED)
TERMINAL = frozenset({REJECTED, DEPLOYED, ROLLED_BACK, FAILED})
# States the backend's job reports while it runs (base.JOB_STATES minus Completed/Failed).
JOB_RUNNING = (SUBMITTED, PREPROCESSING, TRAINING, EVALUATING)

# What the UI shows (the design's three states, plus Failed).
IDLE = "Idle"
IN_PROGRESS = "Training in progress"
NEW_MODEL_DEPLOYED = "New model deployed"
STATUS_FAILED = "Failed"


def ui_status(active_state: str | None, last_state: str | None) -> str:
    """A run in flight -> in progress; otherwise the outcome of the last run.

    Rejected is Idle (the gate worked, the serving model stays); RolledBack is Failed (the candidate
    broke its smoke test; the serving model stays too, but someone should look).
    """
    if active_state:
        return IN_PROGRESS
    if last_state == DEPLOYED:
        return NEW_MODEL_DEPLOYED
    if last_state in (FAILED, ROLLED_BACK):
        return STATUS_FAILED
    return IDLE
