"""The run state machine: its states, the one table of allowed transitions, the groups of states the
control plane asks about, and what the status API shows for them.

The values are the strings stored in the status Table (runs' `state`, `transitions` and the current
row's `last_run_state`): a StrEnum member is its value, so rows written before these enums read back as
the same members. Never rename a value.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
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


class JobState(StrEnum):
    """What a backend's job_status reports; the running ones are run states of the same name."""

    SUBMITTED = "Submitted"
    PREPROCESSING = "Preprocessing"
    TRAINING = "Training"
    EVALUATING = "Evaluating"
    COMPLETED = "Completed"
    FAILED = "Failed"


class DeploymentState(StrEnum):
    """What a backend's deployment() reports: Creating until it can take requests."""

    CREATING = "Creating"
    READY = "Ready"
    FAILED = "Failed"


class UiStatus(StrEnum):
    """What GET /api/status calls the system's state: the design's three, plus Failed."""

    IDLE = "Idle"
    IN_PROGRESS = "Training in progress"
    NEW_MODEL_DEPLOYED = "New model deployed"
    FAILED = "Failed"


# Short names for the states (rs.DEPLOYED), as the control plane and its tests read them.
PENDING, SUBMITTED, PREPROCESSING = RunState.PENDING, RunState.SUBMITTED, RunState.PREPROCESSING
TRAINING, EVALUATING, DEPLOYING = RunState.TRAINING, RunState.EVALUATING, RunState.DEPLOYING
SMOKE_TEST, REJECTED, DEPLOYED = RunState.SMOKE_TEST, RunState.REJECTED, RunState.DEPLOYED
ROLLED_BACK, FAILED = RunState.ROLLED_BACK, RunState.FAILED
IDLE, IN_PROGRESS, NEW_MODEL_DEPLOYED = UiStatus.IDLE, UiStatus.IN_PROGRESS, UiStatus.NEW_MODEL_DEPLOYED
STATUS_FAILED = UiStatus.FAILED

# ---- groups --------------------------------------------------------------------------------------------
# In the order a successful run passes through them.
ORDER = (PENDING, SUBMITTED, PREPROCESSING, TRAINING, EVALUATING, DEPLOYING, SMOKE_TEST, DEPLOYED)
# A run in one of these has ended: it never changes again.
TERMINAL = frozenset({REJECTED, DEPLOYED, ROLLED_BACK, FAILED})
# The job runs: the run follows what job_status reports (job states of the same names).
JOB_RUNNING = (SUBMITTED, PREPROCESSING, TRAINING, EVALUATING)
# A candidate deployment exists: stopping the run or giving up means rolling the candidate back.
ROLLING_OUT = frozenset({DEPLOYING, SMOKE_TEST})
# Ended so that its documents count as trained (the gate's "no" included); any other end gives them back.
ENDED_WELL = frozenset({DEPLOYED, REJECTED})
# Ended with an error someone should look at (recorded as the run's error).
ENDED_BADLY = frozenset({FAILED, ROLLED_BACK})

# ---- transitions ---------------------------------------------------------------------------------------
# Every state change the orchestrator makes goes through `check`. A running job may skip states it passed
# between two ticks (Submitted -> Training), and a job that completed goes to the gate's outcome at once.
_AFTER_JOB = frozenset({REJECTED, DEPLOYING, FAILED})
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    PENDING: frozenset({SUBMITTED, FAILED}),
    SUBMITTED: frozenset({PREPROCESSING, TRAINING, EVALUATING}) | _AFTER_JOB,
    PREPROCESSING: frozenset({TRAINING, EVALUATING}) | _AFTER_JOB,
    TRAINING: frozenset({EVALUATING}) | _AFTER_JOB,
    EVALUATING: _AFTER_JOB,
    DEPLOYING: frozenset({SMOKE_TEST, ROLLED_BACK}),
    SMOKE_TEST: frozenset({DEPLOYED, ROLLED_BACK}),
    **{state: frozenset() for state in TERMINAL},
}
# A run is created in this state.
START = PENDING


class IllegalTransition(RuntimeError):
    """The orchestrator tried a state change the state machine does not have: a bug, never a backend's fault."""


def check(current: str, target: str) -> RunState:
    """`target` as a RunState when the table allows current -> target; raise IllegalTransition otherwise."""
    source, goal = RunState(current), RunState(target)
    if goal not in TRANSITIONS[source]:
        allowed = ", ".join(sorted(TRANSITIONS[source])) or "none: the run has ended"
        raise IllegalTransition(f"a run cannot go from {source} to {goal} (allowed from {source}: {allowed})")
    return goal


def ui_status(active_state: str | None, last_state: str | None) -> UiStatus:
    """A run in flight -> in progress; otherwise the outcome of the last run.

    Rejected is Idle (the gate worked, the serving model stays); RolledBack is Failed (the candidate
    broke its smoke test; the serving model stays too, but someone should look).
    """
    if active_state:
        return UiStatus.IN_PROGRESS
    if last_state == DEPLOYED:
        return UiStatus.NEW_MODEL_DEPLOYED
    if last_state in ENDED_BADLY:
        return UiStatus.FAILED
    return UiStatus.IDLE
