"""POST /api/rollback on the real API, status table (Azurite) and aml backend (the recording MLClient at the
Azure boundary): the traffic goes back to the kept previous deployment, the table and the run history say
so, the reconcile ticks after it leave it in place, and it is refused when there is nothing to go back to or
a run is deploying."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from function_app import run_states as rs
from function_app.api import api
from function_app.backends.base import TransientBackendError
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.control_env import ControlEnv, api_env  # noqa: F401 - fixture
from tests.fakes.recording_ml_client import http_error

KEY = {"x-functions-key": "s3cret"}
SETTLED = 61
V1, V2, V3 = (f"gpt2-pdf-v{version}" for version in range(1, 4))
SHIFT = "online_endpoints.begin_create_or_update"


@pytest.fixture
def env(api_env: ControlEnv) -> ControlEnv:  # noqa: F811 - fixture
    return api_env


@pytest.fixture
def client(env: ControlEnv) -> TestClient:
    return TestClient(api)


def _deploy(env: ControlEnv, name: str) -> str:
    env.upload(name, f"%PDF-1.4 {name}".encode())
    run = env.settle(SETTLED)
    assert run.state == rs.DEPLOYED
    return run.id


def test_nothing_to_roll_back_to_is_a_409(env: ControlEnv, client: TestClient) -> None:
    answer = client.post("/api/rollback", json={}, headers=KEY)
    assert answer.status_code == 409 and "no previous deployment is kept" in answer.json()["detail"]
    _deploy(env, "a.pdf")  # one model: it serves, nothing before it
    answer = client.post("/api/rollback", json={}, headers=KEY)
    assert answer.status_code == 409 and "no previous deployment is kept" in answer.json()["detail"]
    assert env.serving() == V1


def test_rollback_serves_the_previous_model_and_the_table_and_history_say_so(
    env: ControlEnv, client: TestClient
) -> None:
    first, second = _deploy(env, "a.pdf"), _deploy(env, "b.pdf")
    assert env.serving() == V2
    answer = client.post("/api/rollback", json={"requested_by": "ops on call"}, headers=KEY)
    assert answer.status_code == 200, answer.text
    done = answer.json()
    assert (done["serving"], done["replaced"], done["model_version"], done["run"]) == (V1, V2, "1", first)
    assert env.azure.traffic() == {V1: 100} and env.azure.deployment_names() == [V1, V2]  # V2 kept
    serving = client.get("/api/status").json()["serving_model"]
    assert (serving["deployment"], serving["version"], serving["rollback_deployment"]) == (V1, "1", V2)
    assert serving["last_rollback"] == {"at": done["at"], "by": "ops on call", "from_deployment": V2}
    assert env.store.current().serving_run_id == first
    for run_id in (first, second):
        [note] = [e for e in client.get(f"/api/runs/{run_id}").json()["events"] if e["event"] == "rolled back"]
        assert note["detail"] == f"traffic moved from {V2} to {V1} (gpt2-pdf v1), asked by ops on call"
    # The reconcile ticks that follow agree with it: nothing shifts back, the table stays.
    mark = len(env.azure.calls)
    for _ in range(3):
        env.tick(SETTLED)
    assert [c.operation for c in env.azure.calls[mark:] if c.operation == SHIFT] == []
    assert env.serving() == V1 and env.store.current().serving_deployment == V1
    # A second rollback undoes the first; the next promotion replaces what serves then.
    assert client.post("/api/rollback", json={}, headers=KEY).json()["serving"] == V2
    assert env.serving() == V2 and env.store.current().rollback_by == "API"
    _deploy(env, "c.pdf")
    assert env.serving() == V3 and env.store.current().previous_deployment == V2
    assert env.azure.deployment_names() == [V2, V3]


def test_refused_while_a_run_is_deploying(env: ControlEnv, client: TestClient) -> None:
    _deploy(env, "a.pdf")
    _deploy(env, "b.pdf")
    env.upload("c.pdf", b"%PDF-1.4 c")
    for _ in range(20):
        run = env.tick(SETTLED)
        if run and run.state in rs.ROLLING_OUT:
            break
    else:
        raise AssertionError("the third run never reached Deploying")
    answer = client.post("/api/rollback", json={}, headers=KEY)
    assert answer.status_code == 409 and f"run {run.id} is deploying ({run.state})" in answer.json()["detail"]
    assert env.settle(SETTLED).state == rs.DEPLOYED and env.serving() == V3


def test_a_failed_shift_changes_nothing(env: ControlEnv, client: TestClient) -> None:
    _deploy(env, "a.pdf")
    _deploy(env, "b.pdf")
    before = env.store.current()
    env.azure.fail_next(SHIFT, http_error(503))
    answer = client.post("/api/rollback", json={}, headers=KEY)
    assert answer.status_code == 502 and f"could not shift the traffic to {V1}" in answer.json()["detail"]
    after = env.store.current()
    assert (after.serving_deployment, after.previous_deployment, after.rollback_at) == (V2, V1, "")
    assert after.serving_run_id == before.serving_run_id and env.serving() == V2
    env.tick(SETTLED)
    assert env.serving() == V2


def test_a_shift_that_took_effect_despite_its_error_is_recorded(env: ControlEnv, client: TestClient) -> None:
    _deploy(env, "a.pdf")
    _deploy(env, "b.pdf")
    env.azure.fail_next(SHIFT, http_error(500), applied=True)  # applied, but its answer is an error
    answer = client.post("/api/rollback", json={}, headers=KEY)
    assert answer.status_code == 200 and env.serving() == V1
    assert env.store.current().serving_deployment == V1
    env.tick(SETTLED)
    assert env.serving() == V1


def test_a_backend_error_before_anything_changed_is_a_503(env: ControlEnv, client: TestClient, monkeypatch) -> None:
    _deploy(env, "a.pdf")
    _deploy(env, "b.pdf")

    def unreachable() -> None:
        raise TransientBackendError("endpoint unreachable")

    monkeypatch.setattr(env.backend, "deployments", unreachable)
    answer = client.post("/api/rollback", json={}, headers=KEY)
    assert answer.status_code == 503 and "endpoint unreachable; nothing changed" in answer.json()["detail"]
    assert env.store.current().serving_deployment == V2 and env.serving() == V2


# Invariant (Hypothesis): whatever mix of rollbacks, timer ticks and failed traffic shifts (refused, or
# applied with their answer lost) comes, the Table only ever names deployments that exist, keeps a distinct
# rollback target, and one clean tick later says exactly what takes the traffic.
_STEPS = ["rollback", "rollback, shift refused", "rollback, shift applied but errs", "tick", "tick, shift refused"]


def test_any_rollbacks_and_shift_faults_leave_the_table_telling_what_serves(
    env: ControlEnv, client: TestClient
) -> None:
    _deploy(env, "a.pdf")
    _deploy(env, "b.pdf")

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(steps=st.lists(st.sampled_from(_STEPS), max_size=6))
    def check(steps: list[str]) -> None:
        for step in steps:
            if "refused" in step:
                env.azure.fail_next(SHIFT, http_error(503))
            elif "applied" in step:
                env.azure.fail_next(SHIFT, http_error(500), applied=True)
            if step.startswith("tick"):
                env.tick(SETTLED)
            else:
                assert client.post("/api/rollback", json={}, headers=KEY).status_code in (200, 502)
            current, names = env.store.current(), env.azure.deployment_names()
            assert {current.serving_deployment, current.previous_deployment} == set(names) == {V1, V2}
        env.azure._failures.clear()  # faults not met by a shift yet are dropped: the next tick is clean
        env.tick(SETTLED)
        assert env.azure.traffic() == {env.store.current().serving_deployment: 100}

    check()


def test_rollback_on_the_local_backend_serves_the_previous_model_at_the_stable_url(
    tmp_path,
    azurite_connection: str,  # noqa: F811 - fixture
) -> None:
    """Two real deployments (azmlinfsrv, models from a real MLflow registry) behind the local router; the
    Table as two promotions leave it. The rollback moves the router's traffic and a tick keeps it there."""
    from azure.data.tables import TableServiceClient

    from function_app import reconcile, rollback
    from function_app.settings import Settings
    from function_app.status_store import StatusStore
    from local_stack.backend import LocalBackend
    from local_stack.processes import free_port
    from tests.test_local_backend import _register, _score, _wait_ready

    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    _register(tracking, tmp_path, versions=2)
    settings = Settings(
        local_work_dir=str(tmp_path / "work"),
        local_scoring_ports=f"{free_port()},{free_port()}",
        local_router_port=free_port(),
        mlflow_tracking_uri=tracking,
        status_table=f"rollback{tmp_path.name[-8:].replace('_', '')}",
    )
    store = StatusStore.open(TableServiceClient.from_connection_string(azurite_connection), settings.status_table)
    backend = LocalBackend(settings)
    try:
        for version in ("1", "2"):
            backend.begin_deploy(f"run{version}", "gpt2-pdf", version)
            _wait_ready(backend, f"v{version}")
        backend.shift_traffic("v2")
        url = backend.scoring_url()
        now = datetime.now(UTC)
        store.set_serving(now, serving_deployment="v2", previous_deployment="v1", serving_model_version="2")
        assert _score(url)[0]["model"]["version"] == "2"

        done = rollback.roll_back(store, backend, now, "local test")
        assert (done.serving, done.replaced, done.model_version) == ("v1", "v2", "1")
        assert _score(url)[0]["model"]["version"] == "1"  # same URL, the previous model
        assert backend.traffic() == {"v1": 100}
        assert reconcile.reconcile(store, backend, now, lambda current: False).action == reconcile.NOTHING
        assert (store.current().serving_deployment, store.current().previous_deployment) == ("v1", "v2")
    finally:
        backend.stop()
