"""Run orchestration semantics: debounce, one active run, retries, failures never touch serving.

Driven through the real status table (Azurite) with the scripted backend (tests/scripted_backend.py).
"""
from __future__ import annotations

from datetime import datetime, timezone

from function_app import run_states as rs
from function_app.backends.base import PermanentBackendError, TransientBackendError
from function_app.orchestrator import NoDocuments, RunActive
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.control_env import ControlEnv, env  # noqa: F401 - fixture
from tests.scripted_backend import failing_job, promoting_job, rejecting_job

SETTLED = 61  # seconds after the last upload: past the 60 s debounce


def _states(run) -> list[str]:
    return [t["state"] for t in run.transitions]


def _deploy_first_model(env: ControlEnv) -> None:
    env.upload("first.pdf", b"%PDF-1.4 first")
    run = env.settle(SETTLED)
    assert run.state == rs.DEPLOYED
    assert env.backend.serving() == "v1"


def test_burst_of_20_uploads_gives_one_run_with_all_20(env: ControlEnv) -> None:
    for i in range(20):
        env.upload(f"doc{i:02d}.pdf", f"%PDF-1.4 doc {i}".encode())
        if i % 5 == 0:
            env.tick()  # timer firing mid-burst: a Pending run waits for the burst to settle
    run = env.tick(after_s=10)
    assert run.state == rs.PENDING and not any(c[0] == "submit" for c in env.backend.calls)
    run = env.settle(SETTLED)
    assert [c[0] for c in env.backend.calls].count("submit") == 1
    assert len(run.documents) == 20 and run.new_documents == run.documents
    assert _states(run) == list(rs.ORDER)
    assert env.store.runs()[0].id == run.id and len(env.store.runs()) == 1
    status = env.orchestrator.status()
    assert status["state"] == rs.NEW_MODEL_DEPLOYED
    assert status["serving_model"]["version"] == "1" and status["scoring_url"] == "http://scripted/score"
    assert env.tick(after_s=SETTLED) is None  # nothing new: no further run


def test_upload_during_a_run_starts_the_next_run_afterwards(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    first = env.tick(after_s=SETTLED)
    assert first.state == rs.SUBMITTED
    env.upload("b.pdf", b"%PDF-1.4 b")  # arrives while the first run is training
    env.backend.job_script = promoting_job("2")
    first = env.settle(SETTLED)
    assert first.documents == ["a.pdf"] and first.state == rs.DEPLOYED
    second = env.settle(SETTLED)
    assert second.id != first.id and second.documents == ["a.pdf", "b.pdf"] and second.new_documents == ["b.pdf"]
    assert env.backend.serving() == "v2"
    # The replaced deployment stays as the rollback target; the status says so.
    assert [d.name for d in env.backend.deployments()] == ["v1", "v2"]
    assert env.orchestrator.status()["serving_model"]["rollback_deployment"] == "v1"


def test_same_content_under_a_new_name_starts_no_run(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.settle(SETTLED)
    env.upload("a copy.pdf", b"%PDF-1.4 a")
    assert env.tick(after_s=SETTLED) is None
    assert len(env.store.runs()) == 1


def test_transient_submit_error_is_retried_with_backoff_then_succeeds(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.backend.submit_errors = [TransientBackendError("429 throttled"), TransientBackendError("503")]
    run = env.tick(after_s=SETTLED)
    assert run.state == rs.PENDING and run.retry["attempts"] == 1
    assert env.tick(after_s=SETTLED + 5).state == rs.PENDING  # backoff (10 s) not over: not retried
    assert [c[0] for c in env.backend.calls].count("submit") == 1
    run = env.tick(after_s=SETTLED + 11)
    assert run.retry["attempts"] == 2 and "503" in run.retry["last_error"]
    run = env.tick(after_s=SETTLED + 40)
    assert run.state == rs.SUBMITTED and run.retry == {}
    assert [e["event"] for e in env.store.get_run(run.id).events] == ["retry 1 in 10s", "retry 2 in 20s"]
    assert env.settle(SETTLED + 40).state == rs.DEPLOYED


def test_transient_errors_past_the_limit_fail_the_run_with_the_reason(azurite_connection) -> None:  # noqa: F811
    from tests.control_env import make_env

    env = make_env(azurite_connection, debounce_seconds=0, max_transient_retries=2)
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.backend.submit_errors = [TransientBackendError("timeout")] * 3
    for after in (0, 11, 32):
        run = env.tick(after_s=after)
    assert run.state == rs.FAILED and "gave up after 2 retries" in run.error and "timeout" in run.error
    assert env.orchestrator.status()["state"] == rs.STATUS_FAILED


def test_permanent_submit_error_fails_the_run_at_once(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.backend.submit_errors = [PermanentBackendError("compute 'aks' not found")]
    run = env.tick(after_s=SETTLED)
    assert run.state == rs.FAILED and "compute 'aks' not found" in run.error
    assert not env.store.current().active_run_id


def test_failing_step_fails_the_run_and_the_previous_model_keeps_serving(env: ControlEnv) -> None:
    _deploy_first_model(env)
    env.upload("broken.pdf", b"not a pdf")
    env.backend.job_script = failing_job("preprocess failed (exit 1): no document gave text")
    run = env.settle(SETTLED)
    assert run.state == rs.FAILED and "no document gave text" in run.error
    assert _states(run) == [rs.PENDING, rs.SUBMITTED, rs.PREPROCESSING, rs.FAILED]
    assert env.backend.serving() == "v1" and not any(c[0] == "begin_deploy" and c[1] == run.id for c in env.backend.calls)
    status = env.orchestrator.status()
    assert status["state"] == rs.STATUS_FAILED and status["serving_model"]["version"] == "1"
    assert "no document gave text" in status["last_run"]["error"]


def test_rejected_candidate_leaves_the_serving_model(env: ControlEnv) -> None:
    _deploy_first_model(env)
    env.upload("more.pdf", b"%PDF-1.4 more")
    env.backend.job_script = rejecting_job()
    run = env.settle(SETTLED)
    assert run.state == rs.REJECTED and "worse" in run.transitions[-1]["detail"]
    assert env.backend.serving() == "v1" and list(env.backend.deps) == ["v1"]
    assert env.orchestrator.status()["state"] == rs.IDLE


def test_failed_smoke_test_rolls_back_and_the_previous_model_keeps_serving(env: ControlEnv) -> None:
    _deploy_first_model(env)
    env.upload("more.pdf", b"%PDF-1.4 more")
    env.backend.job_script = promoting_job("2")
    env.backend.smoke_error = RuntimeError("HTTP 500 from /score: CUDA error")
    run = env.settle(SETTLED)
    assert run.state == rs.ROLLED_BACK and "HTTP 500" in run.error
    assert _states(run)[-3:] == [rs.DEPLOYING, rs.SMOKE_TEST, rs.ROLLED_BACK]
    assert ("delete_deployment", "v2") in env.backend.calls
    assert not any(c[0] == "shift_traffic" and c[1] == "v2" for c in env.backend.calls)
    assert env.backend.serving() == "v1" and list(env.backend.deps) == ["v1"]
    status = env.orchestrator.status()
    assert status["serving_model"]["version"] == "1" and status["state"] == rs.STATUS_FAILED


def test_blue_green_keeps_one_rollback_target(env: ControlEnv) -> None:
    _deploy_first_model(env)
    for version in ("2", "3"):
        env.upload(f"doc{version}.pdf", f"%PDF-1.4 {version}".encode())
        env.backend.job_script = promoting_job(version)
        assert env.settle(SETTLED).state == rs.DEPLOYED
    assert env.backend.serving() == "v3"
    assert {d.name: d.traffic for d in env.backend.deployments()} == {"v2": 0, "v3": 100}
    # v1 (the idle slot) went before v3 was created, so there were never more than two.
    calls = [c[:2] for c in env.backend.calls]
    assert calls.index(("delete_deployment", "v1")) < calls.index(("begin_deploy", env.store.runs()[0].id))


def test_manual_retrain_skips_the_debounce_and_refuses_a_second_active_run(env: ControlEnv) -> None:
    try:
        env.orchestrator.request_retrain(datetime.now(timezone.utc))
    except NoDocuments:
        pass
    else:
        raise AssertionError("retrain with no documents was accepted")
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.settle(SETTLED)
    run = env.orchestrator.request_retrain(datetime.now(timezone.utc))
    assert run.trigger == "manual"
    try:
        env.orchestrator.request_retrain(datetime.now(timezone.utc))
    except RunActive:
        pass
    else:
        raise AssertionError("a second active run was accepted")
    env.backend.job_script = promoting_job("2")
    assert env.tick().state == rs.SUBMITTED  # no debounce for a manual run
    assert env.settle(0).state == rs.DEPLOYED


def test_preprocess_outcome_per_document_reaches_the_documents(env: ControlEnv) -> None:
    import json

    from function_app.backends.base import JobStatus

    env.upload("good.pdf", b"%PDF-1.4 good")
    env.upload("scan.pdf", b"%PDF-1.4 scan")
    snapshot = "combined_data_20991231_235959.txt"  # what preprocess would write during the run
    manifest = {
        "snapshot": snapshot,
        "documents": [
            {"name": "good.pdf", "status": "ok", "messages": [], "pages": 2, "chars": 900},
            {"name": "scan.pdf", "status": "warning", "messages": ["page 2: no text (image only?)"], "pages": 2, "chars": 40},
        ],
        "totals": {"documents": 2, "ok": 1, "warning": 1, "error": 0, "pages": 4, "chars": 940},
    }
    env.container.upload_blob(f"processed/{snapshot.removesuffix('.txt')}.manifest.json", json.dumps(manifest))
    # The job names no snapshot until evaluate: the run finds the manifest written since it was submitted.
    env.backend.job_script = [JobStatus("Submitted"), JobStatus("Training")] + promoting_job("1")[-1:]
    run = env.settle(SETTLED)
    assert run.snapshot == snapshot and run.metrics["extraction"]["warning"] == 1
    docs = {d["name"]: d for d in env.store.documents()}
    assert docs["good.pdf"]["extraction"] == "ok" and docs["good.pdf"]["snapshot"] == snapshot
    assert docs["scan.pdf"]["extraction"] == "warning" and docs["scan.pdf"]["messages"] == ["page 2: no text (image only?)"]


def test_a_failure_after_the_traffic_shift_never_rolls_the_new_model_back(env: ControlEnv, monkeypatch) -> None:
    def broken() -> str:
        raise RuntimeError("endpoint lookup timed out")

    monkeypatch.setattr(env.backend, "scoring_url", broken)
    env.upload("a.pdf", b"%PDF-1.4 a")
    run = env.settle(SETTLED)
    assert run.state == rs.DEPLOYED and env.backend.serving() == "v1"
    assert run.events[-1]["event"] == "could not read the scoring URL" and "timed out" in run.events[-1]["detail"]
