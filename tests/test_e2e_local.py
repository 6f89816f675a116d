"""End to end with the real local backend: a PDF stating a made-up fact goes in, a deployed model
that completes the fact comes out, through the Functions' own handlers and the HTTP API; a blob beside
it whose name no file can have is reported and never stops it.

Real everything: Azurite (Blob + Table), preprocess/train/evaluate from the component YAMLs as
processes, MLflow sqlite registry, azmlinfsrv + score.py behind the local router. Offline base
model (GPT-2 architecture, tokenizer trained on the snapshot) with the memorize preset, so it fits
a couple of CPU minutes.
"""

from __future__ import annotations

import json
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
from pipeline_contracts import snapshot_ref
from pipeline_contracts.api_responses import RunDetail
from pipeline_contracts.blob_layout import SNAPSHOT_REF_OUTPUT, run_output
from pipeline_contracts.snapshot_ref import SnapshotRef
from synthetic_data.pdfs import make_text_pdf
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.function_index import blob_event
from ui.run_view import loss_curve

FACT = "Declaration: Quillon Brask is the lighthouse keeper of Port Ymmeral."
PROMPT = "Declaration: Quillon Brask is"
EXPECTED = "lighthouse keeper of Port Ymmeral"


@pytest.mark.slow
def test_uploaded_fact_is_answered_by_the_deployed_model(
    tmp_path: Path,
    azurite_connection: str,
    monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    monkeypatch.setenv("DataStorage", azurite_connection)  # the job process reaches storage with it
    settings = Settings(
        data_container="e2e-data",
        status_table="e2estatus",
        debounce_seconds=2,
        base_model="offline",
        train_preset="memorize",
        smoke_prompt=PROMPT,
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
        svc.container.upload_blob("inputs/lighthouse.pdf", pdf.read_bytes())
        functions.follow_uploads(blob_event("e2e-data", "lighthouse.pdf"))
        # Beside it, straight to storage (no event): a 300-character Japanese name, 904 bytes in UTF-8, too
        # long for any file name. It must be reported, and must not stop the normal one.
        odd = "灯台守の記録" * 50 + ".pdf"
        svc.container.upload_blob(f"inputs/{odd}", pdf.read_bytes())
        [doc] = client.get("/api/documents").json()["documents"]
        assert doc["name"] == "lighthouse.pdf" and doc["state"] == "waiting for the next run"

        seen: list[str] = []
        deadline = time.monotonic() + 600
        while True:
            functions.advance_pipeline(TimerRequest(past_due=False))
            status = client.get("/api/status").json()
            step = status["active_run"]["step"] if status["active_run"] else status["last_run"]["state"]
            if not seen or seen[-1] != step:
                seen.append(step)
            if status["active_run"] is None:
                break
            assert time.monotonic() < deadline, f"run not finished in time; states so far {seen}"
            time.sleep(1)

        [run] = client.get("/api/runs").json()["runs"]
        detail = client.get(f"/api/runs/{run['id']}").json()
        assert status["state"] == rs.NEW_MODEL_DEPLOYED, (detail["error"], detail["transitions"])
        transitions = [t["state"] for t in detail["transitions"]]
        assert transitions[0] == rs.PENDING and transitions[-3:] == [rs.DEPLOYING, rs.SMOKE_TEST, rs.DEPLOYED]
        assert transitions == [s for s in rs.ORDER if s in transitions]  # in order, none repeated
        assert seen == [s for s in rs.ORDER if s in seen]
        assert detail["evaluation"]["decision"] == "promote" and detail["snapshot"].startswith("combined_data_")
        # The job named its own snapshot where AML binds preprocess's snapshot output; train used that one.
        ref = svc.container.download_blob(run_output(run["id"], SNAPSHOT_REF_OUTPUT) + snapshot_ref.FILE_NAME)
        assert SnapshotRef.model_validate_json(ref.readall()).snapshot == detail["snapshot"]
        assert detail["metrics"]["snapshot"] == detail["snapshot"]
        # The train step's per-step log reaches the run, and is what the UI draws its loss curve from.
        curve = loss_curve(RunDetail.model_validate(detail))
        assert len(curve) >= 2 and all(point["train loss"] > 0 for point in curve)
        assert curve[-1]["step"] == detail["metrics"]["steps"]

        assert detail["documents"] == ["lighthouse.pdf"]
        [problem] = status["problem_documents"]
        assert problem["name"] == odd and "over the 255 a file name may have" in problem["reason"]
        [doc] = client.get("/api/documents").json()["documents"]
        assert doc["extraction"] == "ok" and doc["first_run"] == {"id": run["id"], "state": rs.DEPLOYED}
        assert doc["pages"] == 1 and doc["chars"] > len(FACT)

        assert status["serving_model"]["version"] == run["model_version"]
        request = urllib.request.Request(
            status["scoring_url"],
            json.dumps({"prompt": PROMPT, "max_new_tokens": 12, "do_sample": False}).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            answer = json.loads(r.read())
        assert EXPECTED in answer["generations"][0][0], answer
    finally:
        svc.backend.stop()
