"""The orchestrator's rules as plain logic: the run state machine's transition table, deadlines per state,
document retries, reconciling traffic; and each backend's side of them (reading the real traffic, cancelling
a job)."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from function_app import deadlines, reconcile
from function_app import document_retries as dr
from function_app import run_states as rs
from function_app.backends.aml import AmlBackend
from function_app.settings import Settings
from function_app.status_store import Run
from local_stack.backend import LocalBackend
from local_stack.pipeline_job import set_state, write_json
from local_stack.processes import alive, spawn
from tests.control_env import AML_WORKSPACE
from tests.fakes.recording_ml_client import RecordingMLClient, _Job

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SETTINGS = Settings(
    queued_timeout_seconds=600,
    train_timeout_seconds=3600,
    deploy_timeout_seconds=900,
    document_retry_seconds=300,
    document_max_attempts=3,
)


def _run(*states: tuple[str, int]) -> Run:
    """A run that entered each state at T0 + seconds."""
    run = Run(id="r", state=states[-1][0], created_at=T0.isoformat())
    run.transitions = [{"state": s, "at": (T0 + timedelta(seconds=at)).isoformat(), "detail": ""} for s, at in states]
    return run


# ---- the state machine ------------------------------------------------------------------------------------
def _reachable(start: rs.RunState) -> set[rs.RunState]:
    seen, todo = {start}, [start]
    while todo:
        for target in rs.TRANSITIONS[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_transition_table_leads_every_run_from_pending_to_an_end() -> None:
    assert set(rs.TRANSITIONS) == set(rs.RunState)  # every state has its row, even those with no way out
    assert _reachable(rs.START) == set(rs.RunState)  # no state the orchestrator could never enter
    for state in rs.RunState:
        ends = _reachable(state) & rs.TERMINAL
        assert ends if state not in rs.TERMINAL else rs.TRANSITIONS[state] == frozenset(), state
    # The successful course is a path through the table, each step allowed.
    assert [rs.check(a, b) for a, b in zip(rs.ORDER, rs.ORDER[1:])] == list(rs.ORDER[1:])
    # A candidate that exists is only ever rolled back or promoted; a job only ever fails or reaches the gate.
    assert {s for s in rs.RunState if rs.ROLLED_BACK in rs.TRANSITIONS[s]} == rs.ROLLING_OUT
    assert {s for s in rs.RunState if rs.REJECTED in rs.TRANSITIONS[s]} == set(rs.JOB_RUNNING)
    assert rs.DEPLOYED not in set().union(*(rs.TRANSITIONS[s] for s in rs.RunState if s != rs.SMOKE_TEST))


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (rs.DEPLOYED, rs.TRAINING),
        (rs.FAILED, rs.PENDING),
        (rs.PENDING, rs.DEPLOYING),
        (rs.DEPLOYING, rs.FAILED),
        (rs.TRAINING, rs.SUBMITTED),
    ],
)
def test_an_illegal_transition_is_refused_naming_both_states(current: rs.RunState, target: rs.RunState) -> None:
    with pytest.raises(rs.IllegalTransition) as refused:
        rs.check(current, target)
    assert f"from {current} to {target}" in str(refused.value)
    assert f"allowed from {current}:" in str(refused.value)


def test_states_are_the_strings_the_status_table_holds() -> None:
    # Rows written before the enums (plain strings) must read back as the same states, and be written back so.
    assert (
        rs.RunState("RolledBack") is rs.ROLLED_BACK and json.dumps({"state": rs.SMOKE_TEST}) == '{"state": "SmokeTest"}'
    )
    assert [str(s) for s in rs.ORDER] == [
        "Pending",
        "Submitted",
        "Preprocessing",
        "Training",
        "Evaluating",
        "Deploying",
        "SmokeTest",
        "Deployed",
    ]
    assert rs.check("Training", "Evaluating") is rs.EVALUATING  # a stored string is checked like a member


# ---- deadlines --------------------------------------------------------------------------------------------
def test_each_state_is_timed_from_when_the_run_entered_it() -> None:
    run = _run((rs.PENDING, 0), (rs.SUBMITTED, 100))
    assert deadlines.overdue(run, T0 + timedelta(seconds=700), SETTINGS) is None
    reason = deadlines.overdue(run, T0 + timedelta(seconds=701), SETTINGS)
    assert reason.startswith("deadline passed in Submitted: still queued") and "QUEUED_TIMEOUT_SECONDS" in reason
    training = _run((rs.PENDING, 0), (rs.SUBMITTED, 100), (rs.TRAINING, 5000))  # long queued, then training
    assert deadlines.overdue(training, T0 + timedelta(seconds=8600), SETTINGS) is None
    assert "TRAIN_TIMEOUT_SECONDS" in deadlines.overdue(training, T0 + timedelta(seconds=8601), SETTINGS)


def test_deploying_and_smoke_test_share_the_deploy_deadline_and_pending_has_none() -> None:
    smoke = _run((rs.DEPLOYING, 0), (rs.SMOKE_TEST, 800))
    assert deadlines.overdue(smoke, T0 + timedelta(seconds=900), SETTINGS) is None
    assert "DEPLOY_TIMEOUT_SECONDS" in deadlines.overdue(smoke, T0 + timedelta(seconds=901), SETTINGS)
    assert deadlines.overdue(_run((rs.PENDING, 0)), T0 + timedelta(days=30), SETTINGS) is None


# ---- document retries -------------------------------------------------------------------------------------
def test_backoff_doubles_per_attempt_and_the_cap_stops_retries() -> None:
    assert [dr.retry_at(a, T0, SETTINGS) - T0 for a in (1, 2, 3)] == [timedelta(seconds=s) for s in (300, 600, 1200)]
    waiting = {"attempts": 1, "retry_at": (T0 + timedelta(seconds=300)).isoformat()}
    assert not dr.due(waiting, T0, SETTINGS) and dr.due(waiting, T0 + timedelta(seconds=300), SETTINGS)
    assert dr.due({"attempts": 0, "retry_at": ""}, T0, SETTINGS)
    assert not dr.due({"attempts": 3, "retry_at": T0.isoformat()}, T0 + timedelta(days=1), SETTINGS)


def test_what_the_api_says_about_a_document() -> None:
    doc = {"sha256": "s1", "trained_by_run": "", "attempts": 0}
    assert dr.state_of(doc, set(), SETTINGS) == dr.WAITING
    assert dr.state_of(doc, {"s1"}, SETTINGS) == dr.IN_RUN  # in flight: not "included" yet
    assert dr.state_of({**doc, "attempts": 1}, set(), SETTINGS) == dr.RETRYING
    assert dr.state_of({**doc, "attempts": 3}, set(), SETTINGS) == dr.FAILED
    assert dr.state_of({**doc, "trained_by_run": "r1"}, {"s1"}, SETTINGS) == dr.INCLUDED
    ends = (rs.DEPLOYED, rs.REJECTED, rs.FAILED, rs.ROLLED_BACK)
    assert [dr.ended_well(s) for s in ends] == [True, True, False, False]


# ---- reconciling the serving deployment with the real traffic ---------------------------------------------
def test_reconcile_plans() -> None:
    plan = reconcile.plan
    assert plan("v1", {"v1": 100}, set()).action == reconcile.NOTHING
    assert plan("", {}, set()).action == reconcile.NOTHING
    # The candidate kept the traffic (a shift that took effect but reported an error): back to the table's.
    kept = plan("v1", {"v2": 100}, {"v1", "v2"})
    assert (kept.action, kept.deployment) == (reconcile.RESTORE, "v1") and "v1 serves" in kept.detail
    assert plan("v1", {"v1": 50, "v2": 50}, {"v1", "v2"}).action == reconcile.RESTORE  # a split, not ours
    assert plan("v1", {}, {"v1"}).action == reconcile.RESTORE  # nothing serves, the table's still exists
    # The table's deployment is gone: the table records what really serves (or that nothing does).
    gone = plan("v1", {"v2": 100}, {"v2"})
    assert (gone.action, gone.deployment) == (reconcile.RECORD, "v2")
    assert plan("v1", {}, set()).action == reconcile.RECORD and plan("v1", {}, set()).deployment == ""
    assert plan("", {"v3": 100}, {"v3"}).deployment == "v3"


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ---- the backends' side --------------------------------------------------------------------------------------
def test_aml_traffic_is_the_endpoints_split_and_cancel_leaves_ended_jobs_alone() -> None:
    settings = Settings(**AML_WORKSPACE)
    fake = RecordingMLClient()
    backend = AmlBackend(settings, ml_client=fake)
    assert backend.traffic() == {}  # no endpoint yet
    fake.add_endpoint(settings.aml_endpoint_name)
    fake.add_deployment("gpt2-pdf-v1", "gpt2-pdf", "1")
    fake.add_deployment("gpt2-pdf-v2", "gpt2-pdf", "2", traffic=100)
    assert backend.traffic() == {"gpt2-pdf-v2": 100}  # the SDK's zero entries left out
    fake._jobs["done"] = _Job(name="done", display_name="r1", tags={}, status="Completed")
    fake._jobs["queued"] = _Job(name="queued", display_name="r2", tags={}, status="NotStarted")
    backend.cancel_job("done", "deadline")
    backend.cancel_job("queued", "deadline")
    assert [c.args["name"] for c in fake.calls if c.operation == "jobs.begin_cancel"] == ["queued"]
    assert fake.job_status("queued") == "Canceled" and fake.job_status("done") == "Completed"


def test_local_traffic_is_read_from_the_backends_state(tmp_path: Path) -> None:
    backend = LocalBackend(Settings(local_work_dir=str(tmp_path)))
    assert backend.traffic() == {}
    write_json(tmp_path / "backend.json", {"deployments": {"v1": {}, "v2": {}}, "traffic": "v2", "router": None})
    assert backend.traffic() == {"v2": 100}


def test_local_cancel_kills_the_jobs_whole_process_group(tmp_path: Path) -> None:
    backend = LocalBackend(Settings(local_work_dir=str(tmp_path)))
    job_dir = tmp_path / "jobs" / "local-r1"
    job_dir.mkdir(parents=True)
    # A runner with a step of its own (as local_job runs each component as a child process).
    script = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    runner = spawn([sys.executable, "-c", script], job_dir / "runner.log", cwd=tmp_path, env={})
    write_json(job_dir / "process.json", runner)
    set_state(job_dir, "Training")
    deadline = time.monotonic() + 10
    while not psutil.Process(runner["pid"]).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    [step] = psutil.Process(runner["pid"]).children()
    backend.cancel_job("local-r1", "deadline passed in Training")
    assert not alive(runner) and not _running(step)
    state = json.loads((job_dir / "state.json").read_text())
    assert state["state"] == "Failed" and state["error"] == "cancelled: deadline passed in Training"
    assert backend.job_status("local-r1").error == "cancelled: deadline passed in Training"
    backend.cancel_job("local-r1", "again")  # ended: left as it is
    assert json.loads((job_dir / "state.json").read_text())["error"] == "cancelled: deadline passed in Training"
