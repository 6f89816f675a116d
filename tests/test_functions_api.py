"""The HTTP API and the trigger handlers, called as the host calls them, on a real Azurite."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from function_app import functions, services
from function_app import run_states as rs
from function_app.api import api
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.control_env import ControlEnv, api_env  # noqa: F401 - fixture
from tests.function_index import blob_event, indexed_functions


@pytest.fixture
def env(api_env: ControlEnv) -> ControlEnv:
    return api_env


def _blob_event(env: ControlEnv, name: str, event_type: str = "Microsoft.Storage.BlobCreated") -> None:
    """What the host does on a blob event from Event Grid: call the function with the event."""
    functions.follow_uploads(blob_event(env.settings.data_container, name, event_type))


async def _through_the_host(method: str, path: str, body: bytes = b"") -> func.HttpResponse:
    """Call http_app_func the way the worker does: AsgiMiddleware with an invocation context."""
    http = indexed_functions()["http_app_func"].get_user_function()
    request = func.HttpRequest(method=method, url=f"http://localhost:7071{path}", headers={}, body=body)
    context = SimpleNamespace(
        function_directory="/home/site/wwwroot",
        function_name="http_app_func",
        invocation_id="1",
        thread_local_storage=None,
        trace_context=None,
        retry_context=None,
    )
    return await http(request, context)


def test_blob_events_record_uploads_idempotently(env: ControlEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    downloads = []
    real_download = env.container.download_blob
    monkeypatch.setattr(
        env.container, "download_blob", lambda name, **kw: downloads.append(name) or real_download(name, **kw)
    )
    _blob_event(env, "a.pdf")
    assert downloads == ["inputs/a.pdf"]  # the event brings no bytes; one streamed read hashes the blob
    _blob_event(env, "a.pdf")  # at-least-once delivery: the same event again
    docs = TestClient(api).get("/api/documents").json()["documents"]
    assert [(d["name"], d["state"]) for d in docs] == [("a.pdf", "waiting for the next run")]


def test_blob_deleted_events_mark_the_document_removed(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.upload("b.pdf", b"%PDF-1.4 b")
    _blob_event(env, "a.pdf")
    _blob_event(env, "b.pdf")
    env.container.delete_blob("inputs/a.pdf")
    _blob_event(env, "a.pdf", "Microsoft.Storage.BlobDeleted")
    env.upload("b.pdf", b"%PDF-1.4 b again")  # deleted and uploaded again: the late delete event changes nothing
    _blob_event(env, "b.pdf", "Microsoft.Storage.BlobDeleted")
    docs = TestClient(api).get("/api/documents").json()["documents"]
    assert [(d["name"], d["version"]) for d in docs] == [("b.pdf", 2)]
    functions.follow_uploads(blob_event("other-container", "c.pdf"))  # not ours: ignored
    assert env.store.document_names() == ["b.pdf"]


def test_timer_advances_runs_and_the_api_reports_them(env: ControlEnv) -> None:
    client = TestClient(api)
    assert client.get("/api/status").json()["state"] == rs.IDLE
    env.upload("a.pdf", b"%PDF-1.4 a")
    _blob_event(env, "a.pdf")
    for _ in range(12):
        functions.advance_pipeline(TimerRequest(past_due=False))
    status = client.get("/api/status").json()
    assert status["state"] == rs.NEW_MODEL_DEPLOYED and status["active_run"] is None
    assert (
        status["serving_model"]["version"] == "1"
        and status["scoring_url"] == "https://aks.example/api/v1/endpoint/gpt2-pdf/score"
    )
    [run] = client.get("/api/runs").json()["runs"]
    assert run["state"] == rs.DEPLOYED and run["documents"] == 1 and run["model_version"] == "1"
    detail = client.get(f"/api/runs/{run['id']}").json()
    assert [t["state"] for t in detail["transitions"]] == list(rs.ORDER)
    assert all(t["at"] for t in detail["transitions"]) and detail["evaluation"]["decision"] == "promote"
    assert client.get("/api/runs/nope").status_code == 404
    [doc] = client.get("/api/documents").json()["documents"]
    assert doc["first_run"] == {"id": run["id"], "state": rs.DEPLOYED}


def test_retrain_under_uvicorn_wants_the_local_key(env: ControlEnv) -> None:
    client = TestClient(api)
    assert client.post("/api/retrain").status_code == 401
    assert client.post("/api/retrain", headers={"x-functions-key": "wrong"}).status_code == 401
    answer = client.post("/api/retrain", headers={"x-functions-key": "s3cret"})
    assert answer.status_code == 409 and "upload a PDF" in answer.json()["detail"]
    env.upload("a.pdf", b"%PDF-1.4 a")
    _blob_event(env, "a.pdf")
    answer = client.post("/api/retrain", headers={"x-functions-key": "s3cret"})
    assert answer.status_code == 202 and answer.json()["state"] == rs.PENDING
    again = client.post("/api/retrain", headers={"x-functions-key": "s3cret"})
    assert again.status_code == 409 and answer.json()["run"] in again.json()["detail"]


def test_without_a_local_key_only_loopback_may_retrain(env: ControlEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    svc = services.get()
    monkeypatch.setattr(
        services, "get", lambda: replace(svc, settings=svc.settings.model_copy(update={"local_api_key": ""}))
    )
    assert TestClient(api).post("/api/retrain").status_code == 403  # TestClient's peer is "testclient"
    local = TestClient(api, client=("127.0.0.1", 5555))
    assert local.post("/api/retrain", json={}).status_code == 409  # allowed, no docs


def test_without_a_local_key_cross_site_requests_from_this_machine_are_refused(
    env: ControlEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    svc = services.get()
    monkeypatch.setattr(
        services, "get", lambda: replace(svc, settings=svc.settings.model_copy(update={"local_api_key": ""}))
    )
    env.upload("a.pdf", b"%PDF-1.4 a")
    _blob_event(env, "a.pdf")
    local = TestClient(api, client=("127.0.0.1", 5555), base_url="http://127.0.0.1:7071")
    # What a page on another site can make the browser send without a CORS preflight:
    form = local.post("/api/retrain", data={"x": "1"}, headers={"Origin": "https://evil.example"})
    no_cors = local.post("/api/retrain", content=b"{}", headers={"Content-Type": "text/plain"})
    fetch = local.post("/api/retrain", json={}, headers={"Sec-Fetch-Site": "cross-site"})
    other_origin = local.post("/api/retrain", json={}, headers={"Origin": "http://127.0.0.1:8501"})
    assert [r.status_code for r in (form, no_cors, fetch, other_origin)] == [403, 415, 403, 403]
    assert "cross-site" in fetch.json()["detail"] and "JSON" in no_cors.json()["detail"]
    assert env.store.current().active_run_id == ""  # none of them started a run
    # The UI (server-side, no Origin) and local scripts send JSON: accepted, as is a same-origin page.
    assert local.post("/api/retrain", json={}, headers={"Origin": "http://127.0.0.1:7071"}).status_code == 202


def test_through_the_functions_host_path_the_host_did_the_auth(env: ControlEnv) -> None:
    async def requests() -> None:  # one event loop, as in the worker: the ASGI app starts once
        health = await _through_the_host("GET", "/api/health")
        assert health.status_code == 200 and json.loads(health.get_body())["backend"] == "aml"
        env.upload("a.pdf", b"%PDF-1.4 a")
        _blob_event(env, "a.pdf")
        retrain = await _through_the_host("POST", "/api/retrain")  # no key: the host checked the function key
        assert retrain.status_code == 202
        status = json.loads((await _through_the_host("GET", "/api/status")).get_body())
        assert status["state"] == rs.IN_PROGRESS and status["active_run"]["step"] == rs.PENDING

    asyncio.run(requests())


def test_openapi_is_served_under_the_api_prefix(env: ControlEnv) -> None:
    schema = TestClient(api).get("/api/openapi.json").json()
    assert {"/api/status", "/api/runs", "/api/runs/{run_id}", "/api/documents", "/api/retrain", "/api/health"} <= set(
        schema["paths"]
    )
    # Every answer is a model from pipeline_contracts.api_responses, documented as such.
    routes = [route for route in api.routes if isinstance(route, APIRoute)]
    assert routes and all(route.response_model.__module__ == "pipeline_contracts.api_responses" for route in routes)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            ok = next(answer for code, answer in operation["responses"].items() if code.startswith("2"))
            assert ok["content"]["application/json"]["schema"]["$ref"].startswith("#/components/schemas/"), (
                method,
                path,
            )
