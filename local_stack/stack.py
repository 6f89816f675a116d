"""The whole system on this machine: Azurite, the HTTP API (uvicorn), the timer loop, the web UI
(Streamlit), local backend.

    python -m local_stack up      # start, upload samples/*.pdf, wait for a deployed model, chat once
    python -m local_stack status  # what is running, and what the system is doing
    python -m local_stack down    # stop everything it started (data stays in .local/)

Installs nothing (the Makefile does). Settings come from the environment like the Function app's
(see local.settings.sample.json); the stack's defaults make a CPU-only, offline run quick:
BASE_MODEL=offline, TRAIN_PRESET=memorize, DEBOUNCE_SECONDS=10. Azurite is started only when
DataStorage is left to the stack (Azurite's default ports).

A second stack (or a test) can run beside the first: LOCAL_STACK_DIR (default .local: stack.json,
logs/, azurite/, work/, mlflow/), LOCAL_STACK_API_PORT (7071), LOCAL_STACK_UI_PORT (8501) and
LOCAL_STACK_TIMER_INTERVAL_S (5, seconds between ticks), with
LOCAL_SCORING_PORTS, LOCAL_ROUTER_PORT and DataStorage pointing elsewhere too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, field_validator

from function_app.run_states import DeploymentState, RunState
from function_app.settings import STORAGE_CONNECTION, EnvSettings, Settings, SettingsError
from local_stack import azurite
from local_stack.backend import LocalBackend
from local_stack.processes import alive, identity, kill, port_open, spawn
from pipeline_contracts.scoring import ScoreResponse

REPO = Path(__file__).resolve().parents[1]
AZURITE_PORTS = azurite.AzuritePorts(10000, 10001, 10002)  # Azurite's defaults (what func start expects)
SERVICES = ("azurite", "api", "timer", "ui")  # in start order; stopped in reverse
DEFAULT_PROMPT = "Declaration: Zorblat Quenwick is"


class StackConfig(EnvSettings):
    """Where the stack keeps its files and which ports its own servers take."""

    folder: Path = Field(REPO / ".local", validation_alias="LOCAL_STACK_DIR")
    # the Functions host's default, so URLs are the same as under `func start`
    api_port: int = Field(7071, ge=1, le=65535, description="a TCP port", validation_alias="LOCAL_STACK_API_PORT")
    ui_port: int = Field(8501, ge=1, le=65535, description="a TCP port", validation_alias="LOCAL_STACK_UI_PORT")
    timer_interval_s: float = Field(5, gt=0, validation_alias="LOCAL_STACK_TIMER_INTERVAL_S")

    @field_validator("folder")
    @classmethod
    def _under_the_repo(cls, folder: Path) -> Path:
        return folder if folder.is_absolute() else REPO / folder

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackConfig:
        try:
            return super().from_env(env)
        except SettingsError as err:
            raise SystemExit(str(err)) from None

    @property
    def stack_file(self) -> Path:
        return self.folder / "stack.json"

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"


def stack_env(config: StackConfig, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings every process of the stack gets: the stack's defaults, then the caller's (which win)."""
    defaults = {
        STORAGE_CONNECTION: AZURITE_PORTS.connection_string(),
        "PIPELINE_BACKEND": "local",
        "BASE_MODEL": "offline",
        "TRAIN_PRESET": "memorize",
        "DEBOUNCE_SECONDS": "10",
        # Jobs, deployments and the registry live in the stack's folder, so two stacks never share them.
        "LOCAL_WORK_DIR": str(config.folder / "work"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{config.folder / 'mlflow' / 'mlflow.db'}",
    }
    return {**defaults, **(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}


def _read_stack(config: StackConfig) -> dict:
    return json.loads(config.stack_file.read_text()) if config.stack_file.exists() else {}


def _save_stack(config: StackConfig, stack: dict) -> None:
    config.folder.mkdir(parents=True, exist_ok=True)
    config.stack_file.write_text(json.dumps(stack, indent=2))


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post_json(url: str, body: dict, timeout: float = 120) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return json.loads(r.read())


def _wait_for_port(port: int, what: str, proc: dict, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_open(port):
        if not alive(proc) or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start; see {log}")
        time.sleep(0.2)


def _start_azurite(config: StackConfig, env: Mapping[str, str], stack: dict) -> None:
    if env[STORAGE_CONNECTION] != AZURITE_PORTS.connection_string():
        print(f"Storage: {STORAGE_CONNECTION} from the environment (no Azurite started)")
    elif port_open(AZURITE_PORTS.blob):
        print(f"Azurite: something already listens on {AZURITE_PORTS.blob}; using it")
    else:
        proc = azurite.start(AZURITE_PORTS, config.folder / "azurite", config.logs / "azurite.log", detach=True)
        stack["azurite"] = identity(proc.pid)
        print(
            f"Azurite: blob {AZURITE_PORTS.blob}, queue {AZURITE_PORTS.queue}, table {AZURITE_PORTS.table} "
            f"(data in {config.folder / 'azurite'})"
        )


def _commands(config: StackConfig, env: dict[str, str]) -> dict[str, tuple[list[str], int | None, dict[str, str]]]:
    """name -> (command line, the port it listens on, its environment) of the stack's own processes."""
    python = sys.executable
    ui_env = {
        **env,
        "API_BASE_URL": config.api_url,
        "DATA_CONTAINER": Settings.from_env(env).data_container,
        # Under uvicorn the API's retrain wants LOCAL_API_KEY as its function key (see ui/README.md).
        "FUNCTION_KEY": env.get("FUNCTION_KEY") or env.get("LOCAL_API_KEY", ""),
    }
    return {
        "api": (
            [python, "-m", "uvicorn", "function_app.api:api", "--host", "127.0.0.1", "--port", str(config.api_port)],
            config.api_port,
            env,
        ),
        "timer": ([python, "-m", "local_stack.timer_loop", "--interval", str(config.timer_interval_s)], None, env),
        "ui": (
            [
                python,
                "-m",
                "streamlit",
                "run",
                "ui/app.py",
                "--server.address",
                "127.0.0.1",
                "--server.port",
                str(config.ui_port),
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
                "--client.toolbarMode",
                "minimal",
            ],
            config.ui_port,
            ui_env,
        ),
    }


def start_services(config: StackConfig, env: dict[str, str]) -> dict:
    """Start whatever of Azurite, the API, the timer loop and the UI is not running; return the records."""
    stack = _read_stack(config)
    if not alive(stack.get("azurite")):
        _start_azurite(config, env, stack)
    for name, (argv, port, process_env) in _commands(config, env).items():
        if alive(stack.get(name)):
            continue
        if port is not None and port_open(port):
            _save_stack(config, stack)
            raise SystemExit(
                f"port {port} (for the {name}) is taken by another program (`func start`?); stop "
                f"it, or run the stack on other ports: LOCAL_STACK_API_PORT, LOCAL_STACK_UI_PORT"
            )
        log = config.logs / f"{name}.log"
        stack[name] = spawn(argv, log, REPO, process_env)
        _save_stack(config, stack)  # recorded at once: `down` must find it even if a later step fails
        if port is not None:
            _wait_for_port(port, f"the {name}", stack[name], log)
    print(f"API: {config.api_url}/api/status (OpenAPI: {config.api_url}/api/docs)")
    print(f"Timer loop: Orchestrator.tick every {config.timer_interval_s:g} s (log {config.logs / 'timer.log'})")
    print(f"Web UI: {config.ui_url} (open it to upload PDFs and watch the run; log {config.logs / 'ui.log'})")
    return stack


def stop_services(config: StackConfig, env: dict[str, str]) -> list[str]:
    """Stop the local backend's jobs, deployments and router, then the stack's own processes."""
    stopped = LocalBackend(Settings.from_env(env)).stop()
    stack = _read_stack(config)
    for name in reversed(SERVICES):
        if alive(stack.get(name)):
            kill(stack[name])
            stopped.append(name)
    config.stack_file.unlink(missing_ok=True)
    return stopped


def _upload_samples(settings: Settings, connection: str) -> dict[str, str]:
    """Upload samples/*.pdf (made from samples/make_samples.py if there are none) by the web UI's rule: never
    overwrite a document (same bytes: nothing written; other bytes: kept beside it). Name in inputs/ -> ETag."""
    from azure.storage.blob import BlobServiceClient

    from ui.uploads import INPUT_PREFIX, REFUSED, upload_document

    samples = sorted((REPO / "samples").glob("*.pdf"))
    if not samples:
        from samples import make_samples

        for name, (title, paragraphs) in make_samples.SAMPLES.items():
            make_samples.write_pdf(REPO / "samples" / name, title, paragraphs)
        samples = sorted((REPO / "samples").glob("*.pdf"))
    container = BlobServiceClient.from_connection_string(connection).get_container_client(settings.data_container)
    if not container.exists():
        container.create_container()
    etags = {}
    for path in samples:
        data = path.read_bytes()
        result = upload_document(container, path.name, data, max_bytes=len(data))  # our own samples: no size cap
        if result.outcome == REFUSED:
            raise SystemExit(f"{path}: {result.message}")
        name = result.blob_name.removeprefix(INPUT_PREFIX)
        etags[name] = container.get_blob_client(result.blob_name).get_blob_properties().etag.strip('"')
        print(f"{path.name}: {result.message}")
    return etags


def _wait_for_model(config: StackConfig, uploads: dict[str, str], timeout_s: float) -> dict:
    """Show progress until a model serves and nothing is pending; return the final status."""
    started = time.monotonic()
    shown = None
    while time.monotonic() - started < timeout_s:
        recorded = {d["name"]: d["etag"] for d in _get(f"{config.api_url}/api/documents")["documents"]}
        all_recorded = all(recorded.get(name) == etag for name, etag in uploads.items())
        status = _get(f"{config.api_url}/api/status")
        run = status["active_run"]
        line = f"{status['state']}" + (f" - run {run['id']}: {run['step']}" if run else "")
        if not all_recorded:
            line = "waiting for the timer to record the uploads"
        elif not run and status["pending_documents"]:
            line = "uploads recorded; a run starts on the next tick"
        if line != shown:
            print(f"[{time.monotonic() - started:6.0f}s] {line}", flush=True)
            shown = line
        if all_recorded and not run and not status["pending_documents"]:
            return status
        time.sleep(2)
    raise SystemExit(f"no model deployed after {timeout_s:.0f}s; see {config.api_url}/api/runs and {config.logs}/")


def _wait_until_deployments_ready(backend: LocalBackend, timeout_s: float) -> None:
    """Restarted deployments load their model first; wait so the first request is answered."""
    deadline = time.monotonic() + timeout_s
    while creating := [d.name for d in backend.deployments() if d.state == DeploymentState.CREATING]:
        if time.monotonic() > deadline:
            raise SystemExit(f"deployments {creating} not ready in time; see {backend.work}/logs/")
        time.sleep(1)
    failed = [d.name for d in backend.deployments() if d.state == DeploymentState.FAILED]
    if failed:
        raise SystemExit(f"deployments {failed} did not start; see {backend.work}/logs/")


def up(args: argparse.Namespace) -> None:
    config = StackConfig.from_env()
    env = stack_env(config)
    settings = Settings.from_env(env)
    start_services(config, env)
    backend = LocalBackend(settings)
    started = backend.resume()
    if started:
        print(f"Local backend: restarted {', '.join(started)}")
    uploads = _upload_samples(settings, env[STORAGE_CONNECTION])
    status = _wait_for_model(config, uploads, args.timeout)
    if not status["scoring_url"] and status["last_run"]:
        # Nothing new to train on, but the last attempt left no model (e.g. it failed): try again.
        print(f"No model is serving after run {status['last_run']['id']} ({status['last_run']['state']}); retraining")
        _post_json(f"{config.api_url}/api/retrain", {})
        status = _wait_for_model(config, uploads, args.timeout)
    last = status["last_run"]
    if last and last["state"] != RunState.DEPLOYED:
        run = _get(f"{config.api_url}/api/runs/{last['id']}")
        print(f"The last run ended {last['state']}: {run.get('error') or run['transitions'][-1]['detail']}")
    if not status["scoring_url"]:
        raise SystemExit("no model is serving; see GET /api/runs for what happened")
    _wait_until_deployments_ready(backend, args.timeout)
    model = status["serving_model"]
    print(f"\nServing {model['name']} version {model['version']} at {status['scoring_url']}")
    answer = ScoreResponse.model_validate(
        _post_json(status["scoring_url"], {"prompt": args.prompt, "max_new_tokens": 24, "do_sample": False})
    )
    print(f"\n> {args.prompt}\n{args.prompt}{answer.text}\n")
    api = config.api_url
    print(f"Web UI:  {config.ui_url}   (Knowledge Base: upload PDFs, watch runs and the loss curve; Chat)")
    print(f"API:     {api}/api/status   (also /api/runs, /api/documents; OpenAPI: {api}/api/docs)")
    print(f"Scoring: {status['scoring_url']}   (stable URL: always the deployment serving the traffic)")
    print(f"  curl -s -X POST {status['scoring_url']} -H 'Content-Type: application/json' \\")
    print(f'       -d \'{{"prompt": "{args.prompt}", "max_new_tokens": 30}}\'')
    print(f"Stop everything: python -m local_stack down   (or make down; data stays in {config.folder})")


def down(_: argparse.Namespace) -> None:
    config = StackConfig.from_env()
    stopped = stop_services(config, stack_env(config))
    print(f"stopped: {', '.join(stopped) or 'nothing was running'} (data kept in {config.folder})")


def status(_: argparse.Namespace) -> None:
    config = StackConfig.from_env()
    stack = _read_stack(config)
    where = {
        "azurite": f"blob http://127.0.0.1:{AZURITE_PORTS.blob}",
        "api": f"{config.api_url}/api/status",
        "timer": str(config.logs / "timer.log"),
        "ui": config.ui_url,
    }
    for name in SERVICES:
        state = f"running (pid {stack[name]['pid']})" if alive(stack.get(name)) else "not running"
        print(f"{name:8} {state:22} {where[name]}")
    try:
        print(json.dumps(_get(f"{config.api_url}/api/status"), indent=2))
    except urllib.error.URLError:
        raise SystemExit(
            f"the API is not running at {config.api_url}; start it with `python -m local_stack up`"
        ) from None


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m local_stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="start the stack, upload the samples, wait for a model, chat once")
    up_parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="what to ask the deployed model")
    up_parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for a deployed model")
    up_parser.set_defaults(handler=up)
    commands.add_parser("down", help="stop everything the stack started").set_defaults(handler=down)
    commands.add_parser("status", help="which processes run, and GET /api/status").set_defaults(handler=status)
    args = parser.parse_args()
    args.handler(args)


if __name__ == "__main__":
    main()
