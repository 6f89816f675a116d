"""The local backend: component commands from the YAMLs, real deployments (azmlinfsrv + score.py)
fetched from a real MLflow registry, the stable router URL, stop/resume, and a failing job step."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from function_app.backends.base import PermanentBackendError
from function_app.settings import Settings
from local_stack import components as local_components
from local_stack.backend import LocalBackend
from local_stack.processes import alive, free_port
from local_stack.router import Router
from pipeline_contracts.scoring import streamed_answer
from tests.contract_samples import evaluation
from tests.tiny_model import make_tiny_model


# ---- component command lines ------------------------------------------------------------------
def test_train_command_keeps_only_the_optional_parts_that_are_set() -> None:
    train = local_components.load("train")
    argv = train.argv({"processed": "/data/processed dir", "base_model": "offline", "epochs": 3}, {"model": "/out/m"})
    assert argv[:2] == ["python", "train.py"] and train.code_dir.name == "aks_jobs"
    assert argv[argv.index("--data") + 1] == "/data/processed dir"  # quoted through, one argument
    assert argv[argv.index("--epochs") + 1] == "3" and "--learning-rate" not in argv
    assert argv.count("--base-model") == 1 and argv[argv.index("--preset") + 1] == "default"  # YAML default


def test_evaluate_gets_the_serving_model_only_when_there_is_one() -> None:
    evaluate = local_components.load("evaluate")
    assert "--serving-model" not in evaluate.argv({"model": "/m"}, {"evaluation": "/e"})
    argv = evaluate.argv({"model": "/m", "serving_model": "/serving/v1"}, {"evaluation": "/e"})
    assert argv[argv.index("--serving-model") + 1] == "/serving/v1"


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ({}, {"model": "/m"}, "input 'processed' is required"),
        ({"processed": "/p", "lr": 1}, {"model": "/m"}, "no input named lr"),
        ({"processed": "/p", "preset": "huge"}, {"model": "/m"}, "is not one of ['default', 'memorize']"),
        ({"processed": "/p"}, {}, "give a path for output(s) model"),
    ],
)
def test_bad_component_values_are_named(inputs: dict, outputs: dict, message: str) -> None:
    with pytest.raises(local_components.ComponentError, match=None) as err:
        local_components.load("train").argv(inputs, outputs)
    assert message in str(err.value)


# ---- deployments --------------------------------------------------------------------------------
def _register(tracking_uri: str, root: Path, versions: int) -> None:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.create_experiment("tests", artifact_location=str(root / "artifacts"))
    client = MlflowClient()
    client.create_registered_model("gpt2-pdf")
    for seed in range(versions):
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_artifacts(str(make_tiny_model(root / f"model{seed}", seed=seed)), "model")
        client.create_model_version("gpt2-pdf", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)


def _score(url: str, headers: dict | None = None) -> tuple[dict, dict]:
    body = json.dumps({"prompt": "Diogo is", "max_new_tokens": 5, "do_sample": False}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read()), dict(r.headers)


def _score_text(url: str, body: dict) -> str:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return r.read().decode()


def _wait_ready(backend: LocalBackend, name: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while (state := backend.deployment(name).state) != "Ready":
        assert state == "Creating", (state, (backend.work / "logs" / f"deployment-{name}.log").read_text()[-3000:])
        assert time.monotonic() < deadline, "deployment not ready in time"
        time.sleep(0.5)


def test_a_completed_job_reports_its_outputs_through_the_contracts(tmp_path: Path) -> None:
    backend = LocalBackend(Settings(local_work_dir=str(tmp_path / "work")))
    job_dir = backend.work / "jobs" / "local-r1"
    (job_dir / "evaluation").mkdir(parents=True)
    (job_dir / "model").mkdir()
    (job_dir / "state.json").write_text(json.dumps({"state": "Completed"}))
    written = evaluation(registered={"name": "gpt2-pdf", "version": "4"})
    (job_dir / "evaluation" / "evaluation.json").write_text(json.dumps(written))
    (job_dir / "model" / "train_summary.json").write_text(json.dumps(written["training"]))
    status = backend.job_status("local-r1")
    assert status.state == "Completed" and status.evaluation.registered.version == "4"
    assert status.training.model_dump(mode="json") == written["training"]
    # What evaluate wrote must be an evaluation: a broken one ends the run naming the file.
    (job_dir / "evaluation" / "evaluation.json").write_text(json.dumps({**written, "decision": "maybe"}))
    with pytest.raises(PermanentBackendError, match="evaluation.json is not a valid evaluation.json"):
        backend.job_status("local-r1")


def test_a_deployment_without_a_free_port_is_refused_with_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as other_program:
        other_program.bind(("127.0.0.1", 0))
        other_program.listen()
        port = other_program.getsockname()[1]
        backend = LocalBackend(Settings(local_work_dir=str(tmp_path / "work"), local_scoring_ports=str(port)))
        with pytest.raises(PermanentBackendError) as refused:
            backend.begin_deploy("run1", "gpt2-pdf", "1")
    assert str(refused.value).startswith(f"no free port in LOCAL_SCORING_PORTS={port} for deployment v1")
    assert "at least three free ports" in str(refused.value) and "rollback target" in str(refused.value)
    assert backend.deployments() == []  # nothing started, nothing recorded


@pytest.mark.slow
def test_blue_green_deployments_behind_a_stable_url(tmp_path: Path) -> None:
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    _register(tracking, tmp_path, versions=2)
    settings = Settings(
        local_work_dir=str(tmp_path / "work"),
        local_scoring_ports=f"{free_port()},{free_port()}",
        local_router_port=free_port(),
        mlflow_tracking_uri=tracking,
    )
    backend = LocalBackend(settings)
    try:
        assert backend.scoring_url() is None
        first = backend.begin_deploy("run1", "gpt2-pdf", "1")
        assert first.state == "Creating" and first.traffic == 0
        _wait_ready(backend, "v1")
        assert backend.smoke_test("v1", "The documents say that")
        backend.shift_traffic("v1")
        url = backend.scoring_url()
        assert url == f"http://127.0.0.1:{settings.local_router_port}/score"
        answer, headers = _score(url)
        assert answer["model"] == {"name": "gpt2-pdf", "version": "1", "weights": "int8", "kinds": []}  # CPU default
        assert headers["azureml-model-deployment"] == "v1"
        streamed = _score_text(url, {"prompt": "Diogo is", "max_new_tokens": 5, "do_sample": False, "stream": True})
        pieces, done = streamed_answer(streamed)  # through the router: the same text as the JSON answer
        assert pieces == answer["generations"][0] and done.generations == answer["generations"]

        backend.begin_deploy("run2", "gpt2-pdf", "2")
        with pytest.raises(PermanentBackendError, match="no free port"):
            backend.begin_deploy("run3", "gpt2-pdf", "3")  # two ports: serving + candidate
        _wait_ready(backend, "v2")
        assert _score(url)[0]["model"]["version"] == "1"  # the candidate has no traffic yet
        backend.shift_traffic("v2")
        assert _score(url)[0]["model"]["version"] == "2"  # same URL, new model
        with pytest.raises(PermanentBackendError, match="refusing to delete deployment v2: it serves"):
            backend.delete_deployment("v2")
        assert _score(url, {"azureml-model-deployment": "v1"})[0]["model"]["version"] == "1"  # rollback target
        assert {d.name: d.traffic for d in backend.deployments()} == {"v1": 0, "v2": 100}
        # The next job's evaluate compares against the model now serving (the registered v2 folder).
        spec = json.loads((backend.work / "jobs" / backend.submit("run3") / "job.json").read_text())
        serving_dir = Path(spec["evaluate_inputs"]["serving_model"])
        assert serving_dir.parts[-3:] == ("azureml-models", "gpt2-pdf", "2")
        assert (serving_dir / "config.json").is_file()

        backend.delete_deployment("v1")
        processes = [backend._state()["deployments"]["v2"]["process"], backend._state()["router"]]
        assert sorted(backend.stop()) == ["deployment v2", "router"]
        assert not any(alive(p) for p in processes)
        assert backend.deployment("v2").state == "Failed"  # recorded, not running
        assert sorted(backend.resume()) == ["deployment v2", "router"]
        _wait_ready(backend, "v2")
        assert _score(url)[0]["model"]["version"] == "2"
    finally:
        backend.stop()


def test_a_failing_step_fails_the_job_with_its_log(tmp_path: Path, azurite_connection: str, monkeypatch) -> None:  # noqa: F811
    from azure.storage.blob import BlobServiceClient

    monkeypatch.setenv("DataStorage", azurite_connection)  # the job process finds the container with it
    settings = Settings(data_container=f"job{free_port()}", local_work_dir=str(tmp_path / "work"))
    container = BlobServiceClient.from_connection_string(azurite_connection).create_container(settings.data_container)
    container.upload_blob("inputs/broken.pdf", b"this is not a PDF at all")
    backend = LocalBackend(settings)
    job = backend.submit("run1")
    assert backend.submit("run1") == job  # resubmitting the same run starts nothing new
    deadline = time.monotonic() + 120
    while (status := backend.job_status(job)).state in ("Submitted", "Preprocessing"):
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(0.5)
    assert status.state == "Failed" and status.error.startswith("preprocess failed (exit 1)")
    assert "broken.pdf" in status.error
    assert (tmp_path / "work" / "jobs" / job / "inputs" / "broken.pdf").exists()  # synced from the container


from tests.azurite import azurite_connection  # noqa: E402,F401 - session fixture


def test_the_router_passes_server_sent_events_through_as_they_come(tmp_path: Path) -> None:
    # The deployment sends its second event only once the client has received the first: a router that
    # buffered the answer would never deliver either.
    first_seen = threading.Event()

    class Streaming(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b'data: {"index": 0, "text": "one"}\n\n')
            self.wfile.flush()
            first_seen.wait(timeout=20)
            self.wfile.write(b'event: done\ndata: {"generations": [["one two"]]}\n\n')

        def log_message(self, *args) -> None:
            pass

    deployment = ThreadingHTTPServer(("127.0.0.1", 0), Streaming)
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"deployments": {"v1": {"port": deployment.server_address[1]}}, "traffic": "v1"}))
    Router.state_file = state
    router = ThreadingHTTPServer(("127.0.0.1", 0), Router)
    for server in (deployment, router):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", router.server_address[1], timeout=30)
        conn.request("POST", "/score", b'{"prompt": "x", "stream": true}', {"Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.getheader("Content-Type") == "text/event-stream"
        assert answer.getheader("azureml-model-deployment") == "v1"
        first = answer.fp.readline() + answer.fp.readline()
        assert first == b'data: {"index": 0, "text": "one"}\n\n'
        first_seen.set()
        assert answer.read() == b'event: done\ndata: {"generations": [["one two"]]}\n\n'
    finally:
        router.shutdown()
        deployment.shutdown()
