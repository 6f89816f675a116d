"""Run orchestration semantics: debounce, one active run, retries, blue/green, failures never touch serving.

The real orchestrator over the real status table (Azurite) drives the real aml backend, whose MLClient is
the recording fake (tests/control_env.py). Each scenario asserts the run's course AND what would have been
sent to Azure: pipeline jobs, deployments, smoke-test requests, traffic updates, deletions.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseError

from function_app import run_states as rs
from function_app.orchestrator import NoDocuments, RunActive
from function_app.status_store import RUN
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.contract_samples import name_snapshot, write_snapshot_blobs
from tests.control_env import ControlEnv, env, make_env  # noqa: F401 - fixture
from tests.fakes.aml_service import QUEUED, JobPlan, failing, promoting, rejecting
from tests.fakes.recording_ml_client import http_error

SETTLED = 61  # seconds after the last upload: past the 60 s debounce
V1, V2, V3, V4 = (f"gpt2-pdf-v{version}" for version in range(1, 5))
SCORING_URL = "https://aks.example/api/v1/endpoint/gpt2-pdf/score"
SUBMIT = "jobs.create_or_update"
DEPLOY = "online_deployments.begin_create_or_update"
INVOKE = "online_endpoints.invoke"
ENDPOINT = "online_endpoints.begin_create_or_update"  # creates the endpoint, or sets its traffic
DELETE = "online_deployments.begin_delete"
# Per write: what it names (the run whose job it is, the deployment, the endpoint's traffic).
_NAMED = {
    SUBMIT: lambda args: args["job"]["display_name"],
    DEPLOY: lambda args: args["deployment"]["name"],
    INVOKE: lambda args: args["deployment_name"],
    ENDPOINT: lambda args: args["endpoint"]["traffic"],
    DELETE: lambda args: args["name"],
}


def _sent(env: ControlEnv, since: int = 0) -> list[tuple]:
    """Every call that would have changed (or, for invoke, exercised) something in Azure, in order."""
    return [
        (call.operation, _NAMED[call.operation](call.args))
        for call in env.azure.calls[since:]
        if call.operation in _NAMED
    ]


def _rollout(run_id: str, candidate: str, traffic: dict[str, int], *deleted: str) -> list[tuple]:
    """What a promoted run sends: its job, the candidate, its smoke test (as JSON, then streamed), the traffic,
    then the pruning."""
    return [
        (SUBMIT, run_id),
        (DEPLOY, candidate),
        (INVOKE, candidate),
        (INVOKE, candidate),
        (ENDPOINT, traffic),
        *((DELETE, name) for name in deleted),
    ]


def _states(run) -> list[str]:
    return [t["state"] for t in run.transitions]


def _deploy(env: ControlEnv, name: str) -> None:
    env.upload(name, f"%PDF-1.4 {name}".encode())
    assert env.settle(SETTLED).state == rs.DEPLOYED


def _deploy_first_model(env: ControlEnv) -> None:
    _deploy(env, "first.pdf")
    assert env.serving() == V1


def test_burst_of_20_uploads_gives_one_run_with_all_20(env: ControlEnv) -> None:
    for i in range(20):
        env.upload(f"doc{i:02d}.pdf", f"%PDF-1.4 doc {i}".encode())
        if i % 5 == 0:
            env.tick()  # timer firing mid-burst: a Pending run waits for the burst to settle
    run = env.tick(after_s=10)
    # Nothing is sent to Azure while uploads arrive (each tick only reads the endpoint's traffic).
    assert run.state == rs.PENDING and env.azure.writes() == []
    assert set(env.azure.operations()) == {"online_endpoints.get"}
    run = env.settle(SETTLED)
    assert len(run.documents) == 20 and run.new_documents == run.documents
    assert _states(run) == list(rs.ORDER)
    assert env.store.runs()[0].id == run.id and len(env.store.runs()) == 1
    # ONE pipeline job, over the whole inputs/ folder, then the rollout of the model it registered.
    assert _sent(env) == _rollout(run.id, V1, {V1: 100})
    job = env.azure.last(SUBMIT).args["job"]
    assert job["name"] == run.job_id and env.azure.job_names() == [run.job_id]
    assert job["inputs"]["documents"]["path"] == "azureml://datastores/gpt2_training_data/paths/inputs/"
    assert "serving_model" not in job["jobs"]["evaluate"]["inputs"]  # nothing serves yet
    status = env.orchestrator.status()
    assert status["state"] == rs.NEW_MODEL_DEPLOYED
    assert status["serving_model"]["version"] == "1" and status["scoring_url"] == SCORING_URL
    calls = len(env.azure.calls)
    assert env.tick(after_s=SETTLED) is None  # nothing new: no further run
    assert env.azure.operations()[calls:] == ["online_endpoints.get"]  # the traffic, compared with the table


def test_every_change_goes_through_the_transition_table_and_an_illegal_one_changes_nothing(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.aml.answers[V2] = '{"generations": []}'  # the second candidate fails its smoke test
    runs = [env.settle(SETTLED)]
    env.upload("b.pdf", b"%PDF-1.4 b")
    runs.append(env.settle(SETTLED))
    assert [r.state for r in runs] == [rs.DEPLOYED, rs.ROLLED_BACK]
    for run in runs:  # what the orchestrator recorded: each step one the table allows
        states = _states(run)
        assert states[0] == rs.START and all(rs.check(a, b) for a, b in zip(states, states[1:]))
    ended = env.store.get_run(runs[0].id)
    with pytest.raises(rs.IllegalTransition, match="cannot go from Deployed to Training"):
        env.orchestrator._transition(ended, rs.TRAINING, datetime.now(UTC))
    stored = env.store.table.get_entity(RUN, ended.id)
    assert stored["state"] == "Deployed" and len(stored["transitions"]) == len(runs[0].to_entity()["transitions"])
    assert type(stored["state"]) is str and isinstance(env.store.get_run(ended.id).state, rs.RunState)


def test_first_deployment_creates_the_endpoint_and_waits_for_it(azurite_connection) -> None:  # noqa: F811
    env = make_env(azurite_connection, endpoint=False, debounce_seconds=60)
    env.upload("a.pdf", b"%PDF-1.4 a")
    run = env.settle(SETTLED)
    assert run.state == rs.DEPLOYED and env.serving() == V1
    [waited] = run.events
    assert waited["event"] == "retry 1 in 10s" and "creating online endpoint gpt2-pdf" in waited["detail"]
    assert _sent(env) == [(SUBMIT, run.id), (ENDPOINT, {}), *_rollout(run.id, V1, {V1: 100})[1:]]
    created = next(c.args["endpoint"] for c in env.azure.calls if c.operation == ENDPOINT)
    assert (created["name"], created["compute"], created["auth_mode"]) == (
        "gpt2-pdf",
        "azureml:aks-compute-target",
        "aml_token",
    )


def test_upload_during_a_run_starts_the_next_run_afterwards(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    first = env.tick(after_s=SETTLED)
    assert first.state == rs.SUBMITTED
    env.upload("b.pdf", b"%PDF-1.4 b")  # arrives while the first run is training
    first = env.settle(SETTLED)
    assert first.documents == ["a.pdf"] and first.state == rs.DEPLOYED
    mark = len(env.azure.calls)
    second = env.settle(SETTLED)
    assert second.id != first.id and second.documents == ["a.pdf", "b.pdf"] and second.new_documents == ["b.pdf"]
    assert env.serving() == V2
    # The replaced deployment stays as the rollback target; the status says so.
    assert env.azure.deployment_names() == [V1, V2]
    assert env.orchestrator.status()["serving_model"]["rollback_deployment"] == V1
    assert _sent(env, mark) == _rollout(second.id, V2, {V1: 0, V2: 100})
    # The second job's evaluate compares its candidate with the model serving when it was submitted.
    # (as the folder of registered model gpt2-pdf:1, the uri_folder evaluate declares)
    assert (
        env.azure.last(SUBMIT).args["job"]["jobs"]["evaluate"]["inputs"]["serving_model"]["path"]
        == "azureml://datastores/workspaceblobstore/paths/models/gpt2-pdf/1/"
    )


def test_same_content_under_a_new_name_starts_no_run(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.settle(SETTLED)
    env.upload("a copy.pdf", b"%PDF-1.4 a")
    assert env.tick(after_s=SETTLED) is None
    assert len(env.store.runs()) == 1
    assert env.azure.operations().count(SUBMIT) == 1


def test_transient_submit_error_is_retried_with_backoff_then_succeeds(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.azure.fail_next(SUBMIT, http_error(429, "Too many requests"))
    env.azure.fail_next(SUBMIT, http_error(503, "Service unavailable"))
    run = env.tick(after_s=SETTLED)
    assert run.state == rs.PENDING and run.retry["attempts"] == 1 and "HTTP 429" in run.retry["last_error"]
    calls = len(env.azure.calls)
    assert env.tick(after_s=SETTLED + 5).state == rs.PENDING  # backoff (10 s) not over: not retried
    assert env.azure.operations()[calls:] == ["online_endpoints.get"]  # only the traffic is read
    run = env.tick(after_s=SETTLED + 11)
    assert run.retry["attempts"] == 2 and "503" in run.retry["last_error"]
    run = env.tick(after_s=SETTLED + 40)
    assert run.state == rs.SUBMITTED and run.retry == {}
    assert [e["event"] for e in env.store.get_run(run.id).events] == ["retry 1 in 10s", "retry 2 in 20s"]
    # Three attempts at the same job (its name is the run's), and one job in the workspace.
    assert _sent(env) == [(SUBMIT, run.id)] * 3 and env.azure.job_names() == [run.job_id]
    assert env.settle(SETTLED + 40).state == rs.DEPLOYED


def test_a_submit_whose_answer_was_lost_does_not_start_a_second_job(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.azure.fail_next(SUBMIT, ServiceResponseError("Connection reset by peer"), applied=True)
    run = env.tick(after_s=SETTLED)
    assert run.state == rs.PENDING and "ServiceResponseError" in run.retry["last_error"]
    run = env.tick(after_s=SETTLED + 11)
    assert rs.SUBMITTED in _states(run) and env.azure.job_names() == [run.job_id]
    assert _sent(env)[:1] == [(SUBMIT, run.id)]  # the retry found the job AML had started
    assert env.settle(SETTLED + 11).state == rs.DEPLOYED
    assert env.azure.operations().count(SUBMIT) == 1


def test_transient_errors_past_the_limit_fail_the_run_with_the_reason(azurite_connection) -> None:  # noqa: F811
    env = make_env(azurite_connection, debounce_seconds=0, max_transient_retries=2)
    env.upload("a.pdf", b"%PDF-1.4 a")
    for _ in range(3):
        env.azure.fail_next(SUBMIT, ServiceRequestError("Connection timeout"))
    for after in (0, 11, 32):
        run = env.tick(after_s=after)
    assert run.state == rs.FAILED and "gave up after 2 retries" in run.error and "timeout" in run.error
    assert env.orchestrator.status()["state"] == rs.STATUS_FAILED
    assert _sent(env) == [(SUBMIT, run.id)] * 3 and env.azure.job_names() == []


def test_permanent_submit_error_fails_the_run_at_once(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.azure.fail_next(SUBMIT, http_error(400, "Compute aks-compute-target not found in workspace ws-gpt2"))
    run = env.tick(after_s=SETTLED)
    assert run.state == rs.FAILED and "HTTP 400" in run.error and "aks-compute-target not found" in run.error
    assert not env.store.current().active_run_id
    assert _sent(env) == [(SUBMIT, run.id)]  # tried once, never again


def test_failing_step_fails_the_run_and_the_previous_model_keeps_serving(env: ControlEnv) -> None:
    _deploy_first_model(env)
    mark = len(env.azure.calls)
    env.upload("broken.pdf", b"not a pdf")
    env.aml.plans.append(failing("preprocess", "preprocess failed (exit 1): no document gave text"))
    run = env.settle(SETTLED)
    assert run.state == rs.FAILED and run.error.startswith("preprocess step Failed: UserError: preprocess failed")
    assert "no document gave text" in run.error and f"[AML job {run.job_id}-preprocess]" in run.error
    assert _states(run) == [rs.PENDING, rs.SUBMITTED, rs.PREPROCESSING, rs.FAILED]
    assert env.serving() == V1 and _sent(env, mark) == [(SUBMIT, run.id)]  # nothing deployed
    status = env.orchestrator.status()
    assert status["state"] == rs.STATUS_FAILED and status["serving_model"]["version"] == "1"
    assert "no document gave text" in status["last_run"]["error"]


def test_rejected_candidate_leaves_the_serving_model(env: ControlEnv) -> None:
    _deploy_first_model(env)
    env.upload("more.pdf", b"%PDF-1.4 more")
    env.aml.plans.append(rejecting())
    run = env.settle(SETTLED)
    assert run.state == rs.REJECTED and "worse" in run.transitions[-1]["detail"]
    assert env.serving() == V1 and env.azure.deployment_names() == [V1]
    assert env.orchestrator.status()["state"] == rs.IDLE
    # Once the job was submitted, nothing but the job and the endpoint's traffic was looked at.
    operations = env.azure.operations()
    submitted = len(operations) - operations[::-1].index(SUBMIT)
    assert operations[submitted:] and all(
        op.startswith("jobs.") or op == "online_endpoints.get" for op in operations[submitted:]
    )
    assert env.azure.writes()[-1] == SUBMIT


def test_failed_smoke_test_rolls_back_and_the_previous_model_keeps_serving(env: ControlEnv) -> None:
    _deploy_first_model(env)
    mark = len(env.azure.calls)
    env.upload("more.pdf", b"%PDF-1.4 more")
    env.aml.answers[V2] = '{"error": "run() failed: CUDA error: device-side assert triggered"}'
    run = env.settle(SETTLED)
    assert run.state == rs.ROLLED_BACK and "smoke test failed" in run.error and "CUDA error" in run.error
    assert _states(run)[-3:] == [rs.DEPLOYING, rs.SMOKE_TEST, rs.ROLLED_BACK]
    # The candidate got its smoke test and was deleted; the traffic was never touched.
    assert _sent(env, mark) == [(SUBMIT, run.id), (DEPLOY, V2), (INVOKE, V2), (DELETE, V2)]
    assert env.serving() == V1 and env.azure.deployment_names() == [V1]
    status = env.orchestrator.status()
    assert status["serving_model"]["version"] == "1" and status["state"] == rs.STATUS_FAILED


def test_a_failed_candidate_goes_and_the_serving_one_and_its_rollback_target_stay(env: ControlEnv) -> None:
    _deploy_first_model(env)
    _deploy(env, "second.pdf")  # v2 serves, v1 is its rollback target
    env.aml.answers[V3] = '{"generations": []}'  # v3 answers its smoke test with nothing
    env.aml.failing_deployments.add(V4)  # v4 never starts
    for candidate, reason, smoke_test in ((V3, "without generations", [(INVOKE, V3)]), (V4, "failed to start", [])):
        mark = len(env.azure.calls)
        env.upload(f"{candidate}.pdf", f"%PDF-1.4 {candidate}".encode())
        run = env.settle(SETTLED)
        assert run.state == rs.ROLLED_BACK and reason in run.error
        assert _sent(env, mark) == [(SUBMIT, run.id), (DEPLOY, candidate), *smoke_test, (DELETE, candidate)]
        assert env.azure.traffic() == {V2: 100} and env.azure.deployment_names() == [V1, V2]
        assert env.orchestrator.status()["serving_model"]["rollback_deployment"] == V1


def test_blue_green_keeps_one_rollback_target(env: ControlEnv) -> None:
    _deploy_first_model(env)
    _deploy(env, "doc2.pdf")
    mark = len(env.azure.calls)
    _deploy(env, "doc3.pdf")
    assert env.serving() == V3
    assert env.azure.traffic() == {V3: 100} and env.azure.deployment_names() == [V2, V3]
    assert env.orchestrator.status()["serving_model"]["rollback_deployment"] == V2
    # v1 went only after v3 had taken the traffic: v1 and v2 both stayed while v3 was created and tested.
    assert _sent(env, mark) == _rollout(env.store.runs()[0].id, V3, {V1: 0, V2: 0, V3: 100}, V1)


def test_manual_retrain_skips_the_debounce_and_refuses_a_second_active_run(env: ControlEnv) -> None:
    try:
        env.orchestrator.request_retrain(datetime.now(UTC))
    except NoDocuments:
        pass
    else:
        raise AssertionError("retrain with no documents was accepted")
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.settle(SETTLED)
    mark = len(env.azure.calls)
    run = env.orchestrator.request_retrain(datetime.now(UTC))
    assert run.trigger == "manual"
    try:
        env.orchestrator.request_retrain(datetime.now(UTC))
    except RunActive:
        pass
    else:
        raise AssertionError("a second active run was accepted")
    env.upload("b.pdf", b"%PDF-1.4 b")  # just uploaded: an upload-triggered run would wait for it to settle
    assert env.tick().state == rs.SUBMITTED  # no debounce for a manual run
    assert env.settle(0).state == rs.DEPLOYED
    assert _sent(env, mark) == _rollout(run.id, V2, {V1: 0, V2: 100})


def _write_manifest(env: ControlEnv, snapshot: str, outcomes: dict[str, tuple[str, list[str]]]) -> None:
    """A snapshot and its manifest as preprocess writes them: {name: (status, messages)}."""
    write_snapshot_blobs(
        env.container,
        snapshot,
        {name: (f"{i:064x}", status, messages) for i, (name, (status, messages)) in enumerate(outcomes.items())},
    )


def _training_then_done() -> JobPlan:
    promoted = promoting()
    return JobPlan(
        [
            QUEUED,
            ("Running", {"preprocess": "Completed", "train": "Running"}),
            ("Running", {"preprocess": "Completed", "train": "Running"}),
            promoted.stages[-1],
        ],
        promoted.evaluation,
    )


def test_preprocess_outcome_per_document_reaches_the_documents(env: ControlEnv) -> None:
    env.upload("good.pdf", b"%PDF-1.4 good")
    env.upload("scan.pdf", b"%PDF-1.4 scan")
    snapshot = "combined_data_20991231_235959.txt"  # what preprocess writes during the run
    _write_manifest(env, snapshot, {"good.pdf": ("ok", []), "scan.pdf": ("warning", ["page 2: no text (image only?)"])})
    env.aml.plans.append(_training_then_done())
    run = env.tick(SETTLED)
    name_snapshot(env.container, run.id, snapshot)
    assert env.tick(SETTLED + 60).state == rs.TRAINING
    assert env.store.get_run(run.id).snapshot == snapshot  # known while training, before evaluate names it
    run = env.settle(SETTLED + 120)
    assert run.snapshot == snapshot and run.metrics["extraction"]["warning"] == 1
    assert run.metrics["perplexity"] == run.evaluation["candidate"]["perplexity"]  # the train summary, kept beside
    docs = {d["name"]: d for d in env.store.documents()}
    assert docs["good.pdf"]["extraction"] == "ok" and docs["good.pdf"]["snapshot"] == snapshot
    assert docs["scan.pdf"]["extraction"] == "warning" and docs["scan.pdf"]["messages"] == [
        "page 2: no text (image only?)"
    ]


def test_the_run_records_the_snapshot_its_job_wrote_not_the_newest_one(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    ours, later = "combined_data_20991231_235958.txt", "combined_data_20991231_235959.txt"
    _write_manifest(env, ours, {"a.pdf": ("ok", [])})
    # A second snapshot a second later (e.g. from a cancelled run's job that was still preprocessing).
    _write_manifest(env, later, {"a.pdf": ("error", ["could not read the file"])})
    env.aml.plans.append(_training_then_done())
    run = env.tick(SETTLED)
    name_snapshot(env.container, run.id, ours)
    run = env.settle(SETTLED + 60)
    assert run.state == rs.DEPLOYED and run.snapshot == ours
    assert env.store.current().serving_snapshot == ours  # what retention keeps for the serving model
    [doc] = env.store.documents()
    assert (doc["extraction"], doc["snapshot"]) == ("ok", ours)


def test_a_failure_after_the_traffic_shift_never_rolls_the_new_model_back(env: ControlEnv) -> None:
    env.azure.fail_next("online_endpoints.get", ServiceResponseError("endpoint lookup timed out"), after=ENDPOINT)
    env.upload("a.pdf", b"%PDF-1.4 a")
    run = env.settle(SETTLED)
    assert run.state == rs.DEPLOYED and env.serving() == V1
    assert run.events[-1]["event"] == "could not read the scoring URL" and "timed out" in run.events[-1]["detail"]
    assert _sent(env) == _rollout(run.id, V1, {V1: 100})  # no deletion, nothing rolled back


def test_a_failed_cleanup_after_the_shift_keeps_the_new_model_and_the_next_promotion_prunes(env: ControlEnv) -> None:
    _deploy_first_model(env)
    _deploy(env, "doc2.pdf")
    env.azure.fail_next(DELETE, http_error(409, "Deployment gpt2-pdf-v1 is being updated"))
    _deploy(env, "doc3.pdf")
    third = env.store.runs()[0]
    assert env.serving() == V3 and third.events[-1]["event"] == f"could not delete {V1}"
    assert env.azure.deployment_names() == [V1, V2, V3]  # v1 stays, at 0% traffic
    mark = len(env.azure.calls)
    _deploy(env, "doc4.pdf")
    assert _sent(env, mark) == _rollout(env.store.runs()[0].id, V4, {V1: 0, V2: 0, V3: 0, V4: 100}, V1, V2)
    assert env.azure.deployment_names() == [V3, V4]


def test_a_traffic_shift_whose_answer_was_lost_keeps_the_rollback_target(env: ControlEnv) -> None:
    _deploy_first_model(env)
    _deploy(env, "doc2.pdf")  # v2 serves, v1 is its rollback target
    mark = len(env.azure.calls)
    # The update reached AML (v3 takes the traffic) but its answer did not reach the Function.
    env.azure.fail_next(ENDPOINT, ServiceResponseError("Connection reset by peer"), applied=True)
    _deploy(env, "doc3.pdf")
    run = env.store.runs()[0]
    assert [e["event"] for e in run.events] == ["retry 1 in 10s"] and "shift traffic" in run.events[0]["detail"]
    # The retry saw v3 serving: no second smoke test or traffic update; v2, what v3 replaced, stays.
    assert _sent(env, mark) == _rollout(run.id, V3, {V1: 0, V2: 0, V3: 100}, V1)
    assert env.azure.traffic() == {V3: 100} and env.azure.deployment_names() == [V2, V3]
    serving = env.orchestrator.status()["serving_model"]
    assert (serving["deployment"], serving["rollback_deployment"]) == (V3, V2)


def test_a_lost_release_after_deployed_still_records_the_new_serving_model(env: ControlEnv, monkeypatch) -> None:
    _deploy_first_model(env)
    release, lost = env.store.finish_active, []

    def lost_once(run, now, serving=None):  # the Deployed run row is saved; the state-table write is not
        if not lost:
            lost.append(run.id)
            raise ServiceResponseError("table write timed out")
        return release(run, now, serving)

    monkeypatch.setattr(env.store, "finish_active", lost_once)
    env.upload("doc2.pdf", b"%PDF-1.4 doc2")
    run = env.settle(SETTLED)  # a later tick finds the ended run still holding the slot and releases it
    assert run.state == rs.DEPLOYED and lost == [run.id] and env.serving() == V2
    serving = env.orchestrator.status()["serving_model"]
    assert (serving["deployment"], serving["rollback_deployment"]) == (V2, V1)
    assert serving["version"] == run.model_version
