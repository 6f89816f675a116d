"""Runs under faults, one scenario per promise (issue 10, items 2-6): documents of a failed run are given
back and retried, the serving deployment and the real traffic agree, the debounce has a maximum wait,
stuck states have deadlines and a run can be cancelled, failed submissions back off, runs are pruned and
paged. The real orchestrator and status table (Azurite) drive the real aml backend over the recording fake.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from function_app import run_states as rs
from function_app import services
from function_app.api import api
from function_app.status_store import RunChanged, UploadedBlob
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.control_env import ControlEnv, make_env
from tests.fakes.aml_service import QUEUED, JobPlan, failing
from tests.fakes.recording_ml_client import http_error

SETTLED = 61
V1, V2, V3 = (f"gpt2-pdf-v{version}" for version in range(1, 4))
ENDPOINT = "online_endpoints.begin_create_or_update"
SUBMIT = "jobs.create_or_update"
RETRY_S = 120  # DOCUMENT_RETRY_SECONDS in these tests


def _env(connection: str, **overrides) -> ControlEnv:
    settings = dict(debounce_seconds=60, document_retry_seconds=RETRY_S, document_max_attempts=2)
    return make_env(connection, **{**settings, **overrides})


@pytest.fixture
def env(azurite_connection: str, monkeypatch: pytest.MonkeyPatch) -> ControlEnv:  # noqa: F811
    env = _env(azurite_connection)
    _serve_api(env, monkeypatch)
    return env


def _serve_api(env: ControlEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = services.Services(env.settings, env.store, env.container, env.backend, env.orchestrator)
    monkeypatch.setattr(services, "get", lambda: svc)


def _documents() -> dict[str, dict]:
    return {d["name"]: d for d in TestClient(api).get("/api/documents").json()["documents"]}


def _deploy(env: ControlEnv, name: str, after_s: float = SETTLED) -> None:
    env.upload(name, f"%PDF-1.4 {name}".encode())
    assert env.settle(after_s).state == rs.DEPLOYED


# ---- 2: a failed run gives its documents back ---------------------------------------------------------------
def test_a_failed_run_gives_its_documents_back_and_a_later_run_deploys_them(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.aml.plans.append(failing("train", "node preempted: spot VM evicted"))
    run = env.tick(after_s=SETTLED)
    assert run.state == rs.SUBMITTED and run.new_documents == ["a.pdf"]
    doc = _documents()["a.pdf"]
    assert doc["state"] == "in the active run" and doc["active_run"] == run.id and doc["first_run"] is None
    failed = env.settle(SETTLED)
    assert failed.state == rs.FAILED and "node preempted" in failed.error
    doc = _documents()["a.pdf"]
    assert doc["state"] == "waiting to retry" and doc["attempts"] == 1 and doc["first_run"] is None
    assert "node preempted" in doc["last_error"] and failed.id in doc["last_error"]
    # Backoff: nothing starts before DOCUMENT_RETRY_SECONDS are over, then a run retries them by itself.
    ended = datetime.fromisoformat(failed.updated_at)
    assert env.orchestrator.tick(ended + timedelta(seconds=RETRY_S - 5)) is None
    retry = env.orchestrator.tick(ended + timedelta(seconds=RETRY_S + 1))
    assert retry.id != failed.id and retry.new_documents == ["a.pdf"]
    assert env.settle((ended - datetime.now(UTC)).total_seconds() + RETRY_S + 1).state == rs.DEPLOYED
    doc = _documents()["a.pdf"]
    assert doc["state"] == "included" and doc["first_run"] == {"id": retry.id, "state": rs.DEPLOYED}
    assert env.serving() == V1


def test_a_rolled_back_run_gives_its_documents_back_too(env: ControlEnv) -> None:
    _deploy(env, "first.pdf")
    env.aml.answers[V2] = '{"generations": []}'
    env.upload("second.pdf", b"%PDF-1.4 second")
    run = env.settle(SETTLED)
    assert run.state == rs.ROLLED_BACK
    docs = _documents()
    assert docs["first.pdf"]["state"] == "included"
    assert docs["second.pdf"]["state"] == "waiting to retry" and "smoke test failed" in docs["second.pdf"]["last_error"]


def test_past_the_cap_documents_show_as_failed_until_a_new_upload_includes_them(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    after = SETTLED
    for attempt in (1, 2):
        env.aml.plans.append(failing("preprocess", f"preprocess failed, attempt {attempt}"))
        assert env.settle(after).state == rs.FAILED
        after += RETRY_S * 2 ** (attempt - 1) + SETTLED
    doc = _documents()["a.pdf"]
    assert doc["state"] == "failed" and doc["attempts"] == 2 and "attempt 2" in doc["last_error"]
    assert TestClient(api).get("/api/status").json()["failed_documents"] == 1
    for later in range(3):  # past the cap: no run starts by itself, however long
        assert env.tick(after_s=after + later * 3600) is None
    env.upload("b.pdf", b"%PDF-1.4 b")  # a new upload's run includes the failed one again
    run = env.settle(after + 4 * 3600)
    assert run.state == rs.DEPLOYED and run.new_documents == ["a.pdf", "b.pdf"]
    assert {d["state"] for d in _documents().values()} == {"included"}


# ---- 3: the table's serving deployment and the real traffic agree -------------------------------------------
def test_a_rollback_after_a_half_done_traffic_shift_gives_the_traffic_back(env: ControlEnv) -> None:
    _deploy(env, "first.pdf")
    # The shift reached AML (v2 takes the traffic) but the answer was an error that retrying cannot fix.
    env.azure.fail_next(ENDPOINT, http_error(400, "traffic update rejected"), applied=True)
    env.upload("second.pdf", b"%PDF-1.4 second")
    run = env.settle(SETTLED)
    assert run.state == rs.ROLLED_BACK and "traffic update rejected" in run.error
    assert env.azure.traffic() == {V1: 100} and env.azure.deployment_names() == [V1]
    assert env.store.current().serving_deployment == V1
    traffic_updates = [c.args["endpoint"]["traffic"] for c in env.azure.calls if c.operation == ENDPOINT]
    assert traffic_updates[-2:] == [{V1: 0, V2: 100}, {V1: 100, V2: 0}]


def test_every_tick_restores_the_traffic_to_the_deployment_the_table_says_serves(env: ControlEnv) -> None:
    _deploy(env, "first.pdf")
    _deploy(env, "second.pdf")  # v2 serves, v1 is its rollback target
    env.azure._endpoint.traffic = {V1: 100}  # moved behind the control plane's back (or a lost rollback)
    env.tick(after_s=SETTLED * 20)
    assert env.azure.traffic() == {V2: 100} and env.store.current().serving_deployment == V2


def test_when_the_tables_deployment_is_gone_the_table_records_what_serves(env: ControlEnv) -> None:
    _deploy(env, "first.pdf")
    _deploy(env, "second.pdf")
    env.azure._endpoint.traffic = {V1: 100}
    del env.azure._deployments[V2]  # deleted in the studio
    env.tick(after_s=SETTLED * 20)
    current = env.store.current()
    assert (current.serving_deployment, current.serving_model_version) == (V1, "1")
    assert env.azure.traffic() == {V1: 100}
    assert TestClient(api).get("/api/status").json()["serving_model"]["deployment"] == V1


# ---- 4: the debounce has a maximum wait ----------------------------------------------------------------------
def test_steady_uploads_every_50s_still_start_a_run_within_the_max_wait(azurite_connection: str) -> None:  # noqa: F811
    env = _env(azurite_connection, debounce_max_wait_seconds=600)
    start = datetime.now(UTC)
    submitted_at = None
    for i in range(40):  # one upload every 50 s for over half an hour, a tick after each
        now = start + timedelta(seconds=50 * i)
        data = f"%PDF-1.4 upload {i}".encode()
        blob = env.container.get_blob_client(f"inputs/doc{i:02d}.pdf").upload_blob(data)
        # What the trigger records, with the upload time of this simulated clock (Azurite stamps real time).
        sha = hashlib.sha256(data).hexdigest()
        env.store.record_upload(UploadedBlob(f"doc{i:02d}.pdf", blob["etag"].strip('"'), sha, len(data), now), now)
        run = env.orchestrator.tick(now + timedelta(seconds=1))
        if submitted_at is None and run is not None and run.state != rs.PENDING:
            submitted_at = now + timedelta(seconds=1)
    first = env.store.runs()[-1]
    waited = submitted_at - datetime.fromisoformat(first.created_at)
    assert timedelta(seconds=600) <= waited <= timedelta(seconds=600 + 50)
    assert first.trigger == "uploads" and len(first.new_documents) == 13  # what had arrived by then


# ---- 5: deadlines per state, and cancel -----------------------------------------------------------------------
def test_a_job_stuck_queued_is_cancelled_at_its_deadline_and_its_documents_retried(azurite_connection: str) -> None:  # noqa: F811
    env = _env(azurite_connection, queued_timeout_seconds=1800)
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.aml.plans.append(JobPlan([QUEUED]))  # no GPU node can be had: the job never starts
    run = env.settle(SETTLED, ticks=60)
    assert run.state == rs.FAILED and "deadline passed in Submitted" in run.error
    assert "QUEUED_TIMEOUT_SECONDS" in run.error and run.error.endswith(f"; job {run.job_id} cancelled")
    assert env.azure.last("jobs.begin_cancel").args == {"name": run.job_id}
    assert env.azure.job_status(run.job_id) == "Canceled"
    waited = datetime.fromisoformat(run.updated_at) - datetime.fromisoformat(run.transitions[1]["at"])
    assert timedelta(seconds=1800) < waited <= timedelta(seconds=1800 + 60)
    # The slot is free: the documents are retried after their backoff and deployed.
    assert env.settle(SETTLED + 31 * 60 + RETRY_S).state == rs.DEPLOYED


def test_a_hanging_training_step_is_cancelled_at_its_deadline(azurite_connection: str) -> None:  # noqa: F811
    env = _env(azurite_connection, train_timeout_seconds=600)
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.aml.plans.append(JobPlan([QUEUED, ("Running", {"preprocess": "Completed", "train": "Running"})]))
    run = env.settle(SETTLED)
    assert run.state == rs.FAILED and run.error.startswith("deadline passed in Training: training did not finish")
    assert rs.TRAINING in [t["state"] for t in run.transitions]
    assert env.azure.job_status(run.job_id) == "Canceled"


def test_a_cancel_that_fails_still_ends_the_run_and_says_so(azurite_connection: str) -> None:  # noqa: F811
    env = _env(azurite_connection, queued_timeout_seconds=600)
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.aml.plans.append(JobPlan([QUEUED]))
    env.azure.fail_next("jobs.begin_cancel", http_error(503, "Service unavailable"))
    run = env.settle(SETTLED)
    assert run.state == rs.FAILED and f"cancelling job {run.job_id} failed" in run.error
    assert "cancel it in the workspace" in run.error and not env.store.current().active_run_id


def test_cancel_through_the_api_stops_the_job_and_frees_the_slot(env: ControlEnv) -> None:
    client = TestClient(api, client=("127.0.0.1", 5555))  # no LOCAL_API_KEY: this machine may change state
    nothing = client.post("/api/runs/active/cancel", json={})
    assert nothing.status_code == 409 and nothing.json()["detail"] == "no run is active; nothing to cancel"
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.aml.plans.append(JobPlan([QUEUED]))
    run = env.tick(after_s=SETTLED)
    assert run.state == rs.SUBMITTED
    answer = client.post("/api/runs/active/cancel", json={})
    assert answer.status_code == 202 and answer.json()["state"] == rs.FAILED
    assert "cancelled through the API" in answer.json()["error"]
    assert env.azure.job_status(run.job_id) == "Canceled" and not env.store.current().active_run_id
    assert _documents()["a.pdf"]["state"] == "waiting to retry"


# ---- 6: failed submissions back off; runs are pruned and paged -----------------------------------------------
def test_a_permanent_submit_failure_does_not_make_a_failed_run_every_tick(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    for _ in range(30):
        env.azure.fail_next(SUBMIT, http_error(403, "quota exceeded for the compute"))
    for minute in range(30):
        env.tick(after_s=SETTLED + 60 * minute)
    runs = env.store.runs()
    assert len(runs) == 2 and {r.state for r in runs} == {rs.FAILED}  # DOCUMENT_MAX_ATTEMPTS, then it waits
    doc = _documents()["a.pdf"]
    assert doc["state"] == "failed" and "quota exceeded" in doc["last_error"]


def test_old_runs_are_pruned_but_never_the_serving_one(
    azurite_connection: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = _env(azurite_connection, keep_runs=2)
    _serve_api(env, monkeypatch)
    _deploy(env, "first.pdf")
    serving = env.store.runs()[0].id
    for i in range(3):  # three failed runs after it
        env.aml.plans.append(failing("preprocess", "no text"))
        later = 3600 * (i + 1)
        env.orchestrator.request_retrain(datetime.now(UTC) + timedelta(seconds=later))
        assert env.settle(later).state == rs.FAILED
    ids = env.store.run_ids()
    assert len(ids) == 3 and serving in ids and ids[:2] == [r.id for r in env.store.runs()[:2]]
    assert TestClient(api).get(f"/api/runs/{serving}").json()["state"] == rs.DEPLOYED


def test_runs_are_paged_newest_first(env: ControlEnv) -> None:
    for i in range(5):
        env.upload(f"doc{i}.pdf", f"%PDF-1.4 {i}".encode())
        env.settle(SETTLED + 3600 * i)
    client = TestClient(api)
    first = client.get("/api/runs", params={"limit": 2}).json()
    second = client.get("/api/runs", params={"limit": 2, "before": first["next"]}).json()
    last = client.get("/api/runs", params={"limit": 2, "before": second["next"]}).json()
    pages = [[r["id"] for r in page["runs"]] for page in (first, second, last)]
    assert [len(p) for p in pages] == [2, 2, 1] and last["next"] is None
    assert sum(pages, []) == sorted(sum(pages, []), reverse=True) == [r.id for r in env.store.runs()]


def test_documents_read_only_the_runs_they_name(env: ControlEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    _deploy(env, "first.pdf")
    monkeypatch.setattr(env.store, "runs", lambda: pytest.fail("/api/documents loaded every run"))
    [doc] = _documents().values()
    assert doc["first_run"]["state"] == rs.DEPLOYED


# ---- two timer ticks racing -----------------------------------------------------------------------------------
def test_a_slower_instances_stale_run_never_overwrites_what_the_other_wrote(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.aml.plans.append(JobPlan([QUEUED]))
    run = env.tick(after_s=SETTLED)
    stale = env.store.get_run(run.id)  # what a slower instance read, still Submitted
    assert _cancel() == rs.FAILED  # meanwhile the run ends (here: cancelled)
    stale.state = rs.TRAINING
    with pytest.raises(RunChanged):
        env.store.save_run(stale)
    assert env.store.get_run(run.id).state == rs.FAILED
    assert [r.state for r in env.store.runs()] == [rs.FAILED]  # no run left looking active


def _cancel() -> str:
    return TestClient(api, client=("127.0.0.1", 5555)).post("/api/runs/active/cancel", json={}).json()["state"]
