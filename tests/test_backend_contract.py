"""The backend protocol (function_app/backends/base.py) as behaviour, one suite run against both backends.

`local`: the real LocalBackend, its job and deployment processes, its router; a deployment's answers come
from a stand-in scoring server on the deployment's own port (the real scoring server is exercised in
test_local_backend.py's slow blue/green test). `aml`: the real AmlBackend over the recording fake MLClient
(tests/fakes/recording_ml_client.py), whose scripted state plays the workspace. Each World says how its
outside world moves on (a job running, a deployment answering, a deployment's pods gone); the tests only
call the backend.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from function_app.backends.aml import AmlBackend
from function_app.backends.base import PermanentBackendError, PipelineBackend, SmokeTestFailed
from function_app.run_states import DeploymentState, JobState
from function_app.settings import Settings
from local_stack.backend import LocalBackend
from local_stack.pipeline_job import set_state, write_json
from local_stack.processes import free_port, kill, spawn
from pipeline_contracts.scoring import StreamPiece
from tests.contract_samples import score_response
from tests.control_env import AML_WORKSPACE
from tests.fakes.recording_ml_client import RecordingMLClient

MODEL = "gpt2-pdf"
GENERATION = score_response(" the harbour closes at dusk.")


class _StandIn(BaseHTTPRequestHandler):
    """A deployment's scoring server answering `answer` (JSON), or as a stream when asked for one."""

    answer = ""
    stream: str | None = None  # what a streamed request gets, when not the answer's own events

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text, kind = self.answer, "application/json"
        if body.get("stream") and self.stream is not None:
            text, kind = self.stream, "text/event-stream"
        elif body.get("stream"):
            pieces = json.loads(text)["generations"][0]
            text = "".join(
                f"data: {json.dumps({'index': 0, 'prompt': 0, 'sequence': 0, 'text': p})}\n\n" for p in pieces
            )
            text += f"event: done\ndata: {self.answer}\n\n"
            kind = "text/event-stream"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(text.encode())))
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args) -> None:
        pass


class LocalWorld:
    def __init__(self, tmp_path: Path) -> None:
        # Deployment processes find no model in this empty registry and end: only stand-ins answer.
        self.settings = Settings(
            local_work_dir=str(tmp_path / "work"),
            local_router_port=free_port(),
            local_scoring_ports=",".join(str(free_port()) for _ in range(3)),
            mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        )
        self.backend = LocalBackend(self.settings)
        self.servers: list[ThreadingHTTPServer] = []

    def running_job(self) -> str:
        """A job whose runner is busy in a step."""
        job_dir = self.backend.work / "jobs" / "local-running"
        job_dir.mkdir(parents=True)
        runner = spawn(
            [sys.executable, "-c", "import time; time.sleep(300)"], job_dir / "runner.log", cwd=job_dir, env={}
        )
        write_json(job_dir / "process.json", runner)
        set_state(job_dir, JobState.TRAINING)
        return job_dir.name

    def answers(self, name: str, answer: str, stream: str | None = None) -> None:
        port = urlsplit(self.backend.deployment(name).scoring_url).port
        handler = type("Answer", (_StandIn,), {"answer": answer, "stream": stream})
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)

    def pods_gone(self, name: str) -> None:
        kill(self.backend._state()["deployments"][name]["process"])

    def close(self) -> None:
        self.backend.stop()
        for server in self.servers:
            server.shutdown()
            server.server_close()


class AmlWorld:
    def __init__(self, tmp_path: Path) -> None:
        self.settings = Settings(**AML_WORKSPACE)
        self.fake = RecordingMLClient()
        self.fake.add_endpoint(self.settings.aml_endpoint_name)
        self.backend = AmlBackend(self.settings, ml_client=self.fake)

    def running_job(self) -> str:
        job = self.backend.submit("running")
        self.fake.script_job(job, "Running", {"preprocess": "Completed", "train": "Running"})
        return job

    def answers(self, name: str, answer: str, stream: str | None = None) -> None:
        self.fake.respond(name, answer, stream=stream)

    def pods_gone(self, name: str) -> None:
        self.fake.set_deployment_state(name, "Failed")

    def close(self) -> None:
        pass


@pytest.fixture(params=[LocalWorld, AmlWorld], ids=["local", "aml"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalWorld | AmlWorld]:
    made = request.param(tmp_path)
    try:
        yield made
    finally:
        made.close()


def _jobs(backend: PipelineBackend) -> set[str]:
    if isinstance(backend, LocalBackend):
        return {path.name for path in (backend.work / "jobs").iterdir()}
    return set(backend._ml.job_names())


def test_a_retried_submit_starts_no_second_job(world) -> None:
    job = world.backend.submit("20261130-120000-ab12")
    assert world.backend.submit("20261130-120000-ab12") == job and _jobs(world.backend) == {job}
    assert isinstance(world.backend.job_status(job).state, JobState)


def test_cancel_ends_a_running_job_and_leaves_an_ended_one_as_it_is(world) -> None:
    job = world.running_job()
    assert world.backend.job_status(job).state == JobState.TRAINING
    world.backend.cancel_job(job, "cancelled through the API")
    ended = world.backend.job_status(job)
    assert ended.state == JobState.FAILED and ended.error
    world.backend.cancel_job(job, "again")
    assert world.backend.job_status(job) == ended


def test_a_new_deployment_takes_no_traffic_until_it_is_shifted_to(world) -> None:
    backend = world.backend
    assert backend.deployments() == [] and backend.traffic() == {} and backend.scoring_url() is None
    first = backend.begin_deploy("r1", MODEL, "1")
    assert (first.state, first.traffic, first.model_name, first.model_version) == (
        DeploymentState.CREATING,
        0,
        MODEL,
        "1",
    )
    assert backend.begin_deploy("r1", MODEL, "1").name == first.name  # a retried call: still one deployment
    second = backend.begin_deploy("r2", MODEL, "2")
    assert [d.name for d in backend.deployments()] == [first.name, second.name] and backend.traffic() == {}

    backend.shift_traffic(first.name)
    assert backend.traffic() == {first.name: 100} and backend.scoring_url()
    backend.shift_traffic(second.name)
    assert backend.traffic() == {second.name: 100}
    assert {d.name: d.traffic for d in backend.deployments()} == {first.name: 0, second.name: 100}


def test_the_deployment_with_the_traffic_is_never_deleted(world) -> None:
    backend = world.backend
    serving, old = backend.begin_deploy("r2", MODEL, "2"), backend.begin_deploy("r1", MODEL, "1")
    backend.shift_traffic(serving.name)
    with pytest.raises(PermanentBackendError, match=f"refusing to delete deployment {serving.name}"):
        backend.delete_deployment(serving.name)
    backend.delete_deployment(old.name)
    assert [d.name for d in backend.deployments()] == [serving.name] and backend.traffic() == {serving.name: 100}


def test_a_deployment_whose_pods_are_gone_is_failed(world) -> None:
    name = world.backend.begin_deploy("r1", MODEL, "1").name
    world.pods_gone(name)
    assert world.backend.deployment(name).state == DeploymentState.FAILED


def test_a_deployment_that_answers_passes_its_smoke_test(world) -> None:
    name = world.backend.begin_deploy("r1", MODEL, "1").name
    world.answers(name, GENERATION)
    assert world.backend.smoke_test(name, "The harbour") == " the harbour closes at dusk."


@pytest.mark.parametrize("answer", ['{"error": "run() failed: CUDA error"}', '{"generations": []}', "<html>oops"])
def test_an_answer_without_a_generation_fails_the_smoke_test(world, answer: str) -> None:
    name = world.backend.begin_deploy("r1", MODEL, "1").name
    world.answers(name, answer)
    with pytest.raises(SmokeTestFailed, match="without a?\\s?generation"):
        world.backend.smoke_test(name, "The harbour")


@pytest.mark.parametrize(
    ("stream", "says"),
    [
        (
            f"data: {StreamPiece(index=0, prompt=0, sequence=0, text=' another text').model_dump_json()}\n\n"
            f"event: done\ndata: {score_response(' another text')}\n\n",
            "not its JSON answer",
        ),
        ('data: {"index": 0, "prompt": 0, "sequence": 0, "text": "cut"}\n\n', "broken answer"),
    ],
    ids=["disagrees", "no-done-event"],
)
def test_a_stream_that_is_not_the_json_answer_fails_the_smoke_test(world, stream: str, says: str) -> None:
    # Both backends send the smoke request twice, as JSON and streamed (issue 12: the smoke test covers both modes).
    name = world.backend.begin_deploy("r1", MODEL, "1").name
    world.answers(name, GENERATION, stream=stream)
    with pytest.raises(SmokeTestFailed, match=says):
        world.backend.smoke_test(name, "The harbour")


def test_an_unknown_deployment_is_a_permanent_error_and_fails_its_smoke_test(world) -> None:
    with pytest.raises(PermanentBackendError):
        world.backend.deployment("gpt2-pdf-v9")
    with pytest.raises(SmokeTestFailed):
        world.backend.smoke_test("gpt2-pdf-v9", "The harbour")
