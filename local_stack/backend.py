"""The `local` backend: the same pipeline and serving stack as AML, as processes on this machine.

- A job is a detached `local_job` process running the component YAMLs' own command lines; its
  state lives in <work>/jobs/<job>/state.json, so job_status is a file read.
- A deployment is a detached `local_deploy` process that fetches the registered model from the
  MLflow registry and becomes the real AML scoring server (azmlinfsrv + aks_jobs/score.py) on a
  port from LOCAL_SCORING_PORTS. A rollout needs three at once: the serving deployment, its
  rollback target and the candidate (older ones are removed only once the candidate serves).
- The stable scoring URL is the `local_router` on LOCAL_ROUTER_PORT, forwarding to the deployment
  holding the traffic (an endpoint in front of blue/green deployments).
Processes outlive the call that started them (own sessions) and are ended by `stop()`
(`python -m local_stack.backend stop`); `resume()` starts the recorded deployments again.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from function_app import run_choices
from function_app.backends.base import (
    Deployment,
    JobStatus,
    PermanentBackendError,
    PipelineBackend,
    SmokeTestFailed,
    TransientBackendError,
)
from function_app.run_states import JOB_RUNNING, DeploymentState, JobState
from function_app.settings import Settings, child_env
from local_stack.pipeline_job import JobSpec, set_state, write_json
from local_stack.processes import alive, kill, port_open, spawn
from pipeline_contracts.api_requests import TrainChoices
from pipeline_contracts.evaluation import FILE_NAME as EVALUATION_FILE
from pipeline_contracts.evaluation import Evaluation
from pipeline_contracts.scoring import NoGeneration, parse_response, smoke_request, streamed_answer
from pipeline_contracts.train_summary import FILE_NAME as TRAIN_SUMMARY_FILE
from pipeline_contracts.train_summary import TrainSummary

REPO = Path(__file__).resolve().parents[1]
Output = TypeVar("Output", bound=BaseModel)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _read_output(model: type[Output], path: Path) -> Output | None:
    """A step's JSON output read through its contract; None while the step has not written it."""
    try:
        return model.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValidationError as e:
        raise PermanentBackendError(f"{path} is not a valid {path.name}: {e}") from None


class LocalBackend(PipelineBackend):
    def __init__(self, settings: Settings):
        self.settings = settings
        work = Path(settings.local_work_dir)
        self.work = work if work.is_absolute() else REPO / work
        self.state_file = self.work / "backend.json"
        self.ports = [int(p) for p in settings.local_scoring_ports.split(",") if p.strip()]

    # ---- processes and state ---------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        extra = {"PYTHONUNBUFFERED": "1"}
        if self.settings.mlflow_tracking_uri:
            extra["MLFLOW_TRACKING_URI"] = self.settings.mlflow_tracking_uri
        return child_env(extra)

    def _spawn(self, argv: list[str], log_path: Path) -> dict:
        return spawn(argv, log_path, cwd=REPO, env=self._env())

    def _state(self) -> dict:
        return _read_json(self.state_file) or {"deployments": {}, "traffic": "", "router": None}

    def _save(self, state: dict) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        write_json(self.state_file, state)

    # ---- pipeline job ----------------------------------------------------------------------
    def submit(self, run_id: str, choices: TrainChoices | None = None) -> str:
        job_id = f"local-{run_id}"
        job_dir = self.work / "jobs" / job_id
        if (job_dir / "state.json").exists():
            return job_id  # submitted before (a retried tick): never start a second job
        job_dir.mkdir(parents=True, exist_ok=True)
        state = self._state()
        serving = state["deployments"].get(state["traffic"])  # evaluate compares against it
        settings = run_choices.run_settings(self.settings, choices)
        spec = JobSpec(
            run_id=run_id,
            container=self.settings.data_container,
            processed_dir=str(self.work / self.settings.data_container / "processed"),
            preprocess_inputs=self.settings.preprocess_limits(),
            train_inputs={
                "base_model": settings.base_model,
                "preset": settings.train_preset,
                "epochs": settings.train_epochs,
                "learning_rate": settings.train_learning_rate,
                **settings.train_limits(),
                **(sweep.component_inputs() if (sweep := settings.sweep()) else {}),
            },
            evaluate_inputs={
                "model_name": self.settings.model_name,
                "serving_model": self._model_dir(serving) if serving else None,
            },
        )
        spec.write(job_dir)
        set_state(job_dir, JobState.SUBMITTED)
        process = self._spawn([sys.executable, "-m", "local_stack.pipeline_job", str(job_dir)], job_dir / "runner.log")
        write_json(job_dir / "process.json", process)
        return job_id

    def job_status(self, job_id: str) -> JobStatus:
        job_dir = self.work / "jobs" / job_id
        state = _read_json(job_dir / "state.json")
        if state is None:
            raise PermanentBackendError(f"no local job {job_id} under {job_dir.parent}")
        training = _read_output(TrainSummary, job_dir / "model" / TRAIN_SUMMARY_FILE)
        if state["state"] in JOB_RUNNING and not alive(_read_json(job_dir / "process.json")):
            # Re-read: the job may have finished between the two reads.
            state = _read_json(job_dir / "state.json")
            if state["state"] in JOB_RUNNING:
                return JobStatus(
                    JobState.FAILED,
                    error=f"the local job process died during {state['state']}; see {job_dir}/runner.log",
                    training=training,
                )
        completed = state["state"] == JobState.COMPLETED
        evaluation = _read_output(Evaluation, job_dir / "evaluation" / EVALUATION_FILE) if completed else None
        if completed and evaluation is None:
            return JobStatus(
                JobState.FAILED, error=f"evaluate wrote no {EVALUATION_FILE} in {job_dir}/evaluation", training=training
            )
        return JobStatus(JobState(state["state"]), error=state.get("error"), evaluation=evaluation, training=training)

    def cancel_job(self, job_id: str, reason: str) -> None:
        job_dir = self.work / "jobs" / job_id
        state = _read_json(job_dir / "state.json")
        if state is None or state["state"] not in JOB_RUNNING:
            return
        kill(_read_json(job_dir / "process.json"))  # the runner's whole process group: its step too
        set_state(job_dir, JobState.FAILED, error=f"cancelled: {reason}")

    # ---- deployments -----------------------------------------------------------------------
    def _model_dir(self, record: dict) -> str:
        # The layout AML mounts a registered model at: .../azureml-models/<name>/<version>
        return str(self.work / "models" / "azureml-models" / record["model_name"] / record["model_version"])

    def _describe(self, name: str, record: dict, traffic: str) -> Deployment:
        if not alive(record.get("process")):
            state = DeploymentState.FAILED
        elif port_open(record["port"]) and self._healthy(record["port"]):
            state = DeploymentState.READY
        else:
            state = DeploymentState.CREATING
        return Deployment(
            name=name,
            model_name=record["model_name"],
            model_version=record["model_version"],
            scoring_url=f"http://127.0.0.1:{record['port']}/score",
            traffic=100 if name == traffic else 0,
            state=state,
        )

    @staticmethod
    def _healthy(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _record(self, name: str) -> tuple[dict, dict]:
        state = self._state()
        if name not in state["deployments"]:
            raise PermanentBackendError(f"no local deployment named {name!r}; there are {sorted(state['deployments'])}")
        return state, state["deployments"][name]

    def begin_deploy(self, run_id: str, model_name: str, model_version: str) -> Deployment:
        name = f"v{model_version}"
        state = self._state()
        if name in state["deployments"]:  # a retried call: it exists already
            return self._describe(name, state["deployments"][name], state["traffic"])
        taken = {d["port"] for d in state["deployments"].values()}
        port = next((p for p in self.ports if p not in taken and not port_open(p)), None)
        if port is None:
            raise PermanentBackendError(
                f"no free port in LOCAL_SCORING_PORTS={self.settings.local_scoring_ports} for deployment {name} "
                f"(deployments use {sorted(taken)}; any other listed port is taken by another program): list "
                f"at least three free ports, one each for the serving deployment, its rollback target and the "
                f"candidate"
            )
        record = {"model_name": model_name, "model_version": model_version, "port": port, "run_id": run_id}
        record["process"] = self._start_deployment(name, record)
        state["deployments"][name] = record
        self._save(state)
        return self._describe(name, record, state["traffic"])

    def _start_deployment(self, name: str, record: dict) -> dict:
        argv = [
            sys.executable,
            "-m",
            "local_stack.deployment",
            record["model_name"],
            record["model_version"],
            self._model_dir(record),
            str(record["port"]),
        ]
        return self._spawn(argv, self.work / "logs" / f"deployment-{name}.log")

    def deployment(self, name: str) -> Deployment:
        state, record = self._record(name)
        return self._describe(name, record, state["traffic"])

    def deployments(self) -> list[Deployment]:
        state = self._state()
        return [self._describe(n, r, state["traffic"]) for n, r in state["deployments"].items()]

    def smoke_test(self, name: str, prompt: str) -> str:
        """The same greedy request answered as JSON and streamed: both must give the same text."""
        try:
            _, record = self._record(name)
        except PermanentBackendError as e:  # gone: nothing to promote
            raise SmokeTestFailed(str(e)) from None
        try:
            answer = parse_response(self._score(name, record, smoke_request(prompt)))
        except NoGeneration as e:
            raise SmokeTestFailed(f"deployment {name} answered without a generation ({e})") from None
        text = answer.text
        try:
            pieces, done = streamed_answer(self._score(name, record, smoke_request(prompt, stream=True)))
        except (ValueError, KeyError, TypeError) as e:
            raise SmokeTestFailed(f"deployment {name} streamed a broken answer: {e}") from None
        if pieces[:1] != [text] or done.generations != answer.generations:
            raise SmokeTestFailed(f"deployment {name} streamed {pieces[:1]!r}, not its JSON answer {text!r}")
        return text

    def _score(self, name: str, record: dict, body: dict) -> str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{record['port']}/score",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                return r.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            raise SmokeTestFailed(f"deployment {name} answered HTTP {e.code}: {e.read()[:300]!r}") from None
        except (urllib.error.URLError, TimeoutError) as e:
            if alive(record.get("process")):
                raise TransientBackendError(f"deployment {name} did not answer: {e}") from None
            raise SmokeTestFailed(f"deployment {name} is not running: {e}") from None

    def shift_traffic(self, name: str) -> None:
        state, _ = self._record(name)
        state["traffic"] = name
        self._save(state)
        self._ensure_router(state)

    def _ensure_router(self, state: dict) -> None:
        port = self.settings.local_router_port
        if alive(state.get("router")) and port_open(port):
            return
        if port_open(port):
            raise PermanentBackendError(f"LOCAL_ROUTER_PORT {port} is taken by another program; choose a free port")
        argv = [sys.executable, "-m", "local_stack.router", str(self.state_file), str(port)]
        state["router"] = self._spawn(argv, self.work / "logs" / "router.log")
        self._save(state)
        deadline = time.monotonic() + 20
        while not port_open(port):
            if time.monotonic() > deadline or not alive(state["router"]):
                raise TransientBackendError(
                    f"the local router did not listen on {port}; see {self.work}/logs/router.log"
                )
            time.sleep(0.1)

    def delete_deployment(self, name: str) -> None:
        state, record = self._record(name)
        if state["traffic"] == name:  # never take down what is serving (as AML refuses to)
            raise PermanentBackendError(f"refusing to delete deployment {name}: it serves 100% of traffic")
        kill(record.get("process"))
        del state["deployments"][name]
        self._save(state)

    def traffic(self) -> dict[str, int]:
        serving = self._state()["traffic"]
        return {serving: 100} if serving else {}

    def scoring_url(self) -> str | None:
        return f"http://127.0.0.1:{self.settings.local_router_port}/score" if self._state()["traffic"] else None

    # ---- lifecycle of the local stack --------------------------------------------------------
    def stop(self) -> list[str]:
        """End every process this backend started; deployments stay recorded for resume()."""
        stopped = []
        state = self._state()
        for job_dir in sorted((self.work / "jobs").glob("*")):
            job_state = _read_json(job_dir / "state.json") or {}
            process = _read_json(job_dir / "process.json")
            if job_state.get("state") in JOB_RUNNING and alive(process):
                kill(process)
                set_state(job_dir, JobState.FAILED, error="stopped by `local stop` before it finished")
                stopped.append(f"job {job_dir.name}")
        for name, record in state["deployments"].items():
            if alive(record.get("process")):
                kill(record["process"])
                stopped.append(f"deployment {name}")
        if alive(state.get("router")):
            kill(state["router"])
            stopped.append("router")
        return stopped

    def resume(self) -> list[str]:
        """Start the recorded deployments (and the router) that are not running, e.g. after stop()."""
        started = []
        state = self._state()
        for name, record in state["deployments"].items():
            if not alive(record.get("process")):
                record["process"] = self._start_deployment(name, record)
                started.append(f"deployment {name}")
        self._save(state)
        if state["traffic"]:
            self._ensure_router(state)
            started.append("router")
        return started


def main(argv: list[str]) -> None:
    command = argv[0] if argv else ""
    if command not in ("stop", "resume"):
        raise SystemExit("usage: python -m local_stack.backend stop|resume")
    backend = LocalBackend(Settings.from_env())
    done = backend.stop() if command == "stop" else backend.resume()
    print(f"{command}: {', '.join(done) or 'nothing to do'}")


if __name__ == "__main__":
    main(sys.argv[1:])
