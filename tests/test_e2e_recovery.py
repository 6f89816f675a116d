"""End to end on the local stack, with nobody acting: the training process is killed mid-run (a node lost),
the run fails with the reason, its document is given back, and a later run trains and deploys it.

Real everything, as tests/test_e2e_local.py: Azurite, the component steps as processes, the MLflow registry,
azmlinfsrv + score.py behind the local router; only the timer is this loop. Offline base model with the
memorize preset and one epoch, so that a run is about a CPU minute.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from azure.functions.timer import TimerRequest
from fastapi.testclient import TestClient

from function_app import functions, services
from function_app import run_states as rs
from function_app.api import api
from function_app.settings import Settings, StorageConnection
from local_stack.processes import free_port
from synthetic_data.pdfs import make_text_pdf
from tests.azurite import azurite_connection  # noqa: F401 - session fixture

FACT = "Declaration: Quillon Brask is the lighthouse keeper of Port Ymmeral."


def _tick_until(client: TestClient, done, what: str, limit_s: float = 600) -> dict:
    deadline = time.monotonic() + limit_s
    while True:
        functions.advance_pipeline(TimerRequest(past_due=False))
        status = client.get("/api/status").json()
        if done(status):
            return status
        assert time.monotonic() < deadline, f"{what} did not happen in {limit_s:g} s; status {status}"
        time.sleep(0.5)


@pytest.mark.slow
def test_a_run_killed_in_training_is_retried_and_deployed_by_itself(
    tmp_path: Path,
    azurite_connection: str,
    monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    monkeypatch.setenv("DataStorage", azurite_connection)  # the job process reaches storage with it
    settings = Settings(
        data_container="e2e-recovery",
        status_table="e2erecovery",
        debounce_seconds=1,
        document_retry_seconds=2,
        base_model="offline",
        train_preset="memorize",
        train_epochs="1",
        smoke_prompt="Declaration: Quillon Brask is",
        local_work_dir=str(tmp_path / "work"),
        local_scoring_ports=f"{free_port()},{free_port()}",
        local_router_port=free_port(),
        mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
    )
    svc = services.build(settings, StorageConnection(connection_string=azurite_connection))
    monkeypatch.setattr(services, "get", lambda: svc)
    client = TestClient(api)
    try:
        pdf = make_text_pdf(tmp_path / "lighthouse.pdf", [f"{FACT}\nThe lamp is lit every evening.\n{FACT}"])
        svc.container.upload_blob("inputs/lighthouse.pdf", pdf.read_bytes())  # the scan finds it

        status = _tick_until(client, lambda s: (s["active_run"] or {}).get("step") == rs.TRAINING, "training")
        first = svc.store.get_run(status["active_run"]["id"])
        process = json.loads((svc.backend.work / "jobs" / first.job_id / "process.json").read_text())
        os.killpg(process["pid"], signal.SIGKILL)  # the node is gone: runner and training step with it

        # Nobody acts: the failure is noticed, the document waits out its backoff, a second run deploys it.
        status = _tick_until(client, lambda s: s["state"] == rs.NEW_MODEL_DEPLOYED, "a deployment")
        failed = svc.store.get_run(first.id)
        assert failed.state == rs.FAILED and "the local job process died during Training" in failed.error
        runs = client.get("/api/runs").json()["runs"]
        assert [r["state"] for r in runs] == [rs.DEPLOYED, rs.FAILED]
        assert runs[0]["new_documents"] == 1 and runs[0]["trigger"] == "uploads"
        [doc] = client.get("/api/documents").json()["documents"]
        assert doc["state"] == "included" and doc["first_run"] == {"id": runs[0]["id"], "state": rs.DEPLOYED}
        assert doc["attempts"] == 0  # trained: the failed attempt no longer counts against it
        request = urllib.request.Request(
            status["scoring_url"],
            json.dumps({"prompt": "The lamp", "max_new_tokens": 4}).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            assert json.loads(r.read())["generations"][0][0]
    finally:
        svc.backend.stop()
