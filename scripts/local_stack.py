"""The whole system on this machine: Azurite, the HTTP API (uvicorn), the timer loop, local backend.

    python -m scripts.local_stack up      # start, upload samples/*.pdf, wait for a deployed model, chat once
    python -m scripts.local_stack status  # what the system is doing
    python -m scripts.local_stack down    # stop everything it started (data stays in .local/)

Installs nothing (the Makefile does). Settings come from the environment like the Function app's
(see local.settings.sample.json); the stack's defaults make a CPU-only, offline run quick:
BASE_MODEL=offline, TRAIN_PRESET=memorize, DEBOUNCE_SECONDS=10.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from function_app.backends.local import LocalBackend
from function_app.backends.local_processes import alive, identity, kill, port_open, spawn
from function_app.settings import STORAGE_CONNECTION, Settings
from scripts import azurite

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / ".local"
STACK_FILE = LOCAL / "stack.json"
LOGS = LOCAL / "logs"
API_PORT = 7071  # the Functions host's default, so URLs are the same as under `func start`
API = f"http://127.0.0.1:{API_PORT}"
AZURITE_PORTS = azurite.AzuritePorts(10000, 10001, 10002)  # Azurite's defaults (what func start expects)
STACK_DEFAULTS = {
    STORAGE_CONNECTION: AZURITE_PORTS.connection_string(),
    "PIPELINE_BACKEND": "local",
    "BASE_MODEL": "offline",
    "TRAIN_PRESET": "memorize",
    "DEBOUNCE_SECONDS": "10",
}
DEFAULT_PROMPT = "Declaration: Zorblat Quenwick is"


def stack_env() -> dict[str, str]:
    return {**STACK_DEFAULTS, **os.environ, "PYTHONUNBUFFERED": "1"}  # the caller's settings win


def _get(path: str) -> dict:
    with urllib.request.urlopen(API + path, timeout=10) as r:
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


def _start_services(env: dict[str, str]) -> dict:
    stack = json.loads(STACK_FILE.read_text()) if STACK_FILE.exists() else {}
    python = sys.executable
    if not alive(stack.get("azurite")):
        if port_open(AZURITE_PORTS.blob):
            print(f"Azurite: something already listens on {AZURITE_PORTS.blob}; using it")
        else:
            proc = azurite.start(AZURITE_PORTS, LOCAL / "azurite", LOGS / "azurite.log", detach=True)
            stack["azurite"] = identity(proc.pid)
            print(f"Azurite: blob {AZURITE_PORTS.blob}, queue {AZURITE_PORTS.queue}, table {AZURITE_PORTS.table} (data in .local/azurite)")
    if not alive(stack.get("api")):
        if port_open(API_PORT):
            raise SystemExit(f"port {API_PORT} is taken by another program; stop it or `func start` first")
        argv = [python, "-m", "uvicorn", "function_app.api:api", "--host", "127.0.0.1", "--port", str(API_PORT)]
        stack["api"] = spawn(argv, LOGS / "api.log", REPO, env)
        _wait_for_port(API_PORT, "the API (uvicorn)", stack["api"], LOGS / "api.log")
        print(f"API: {API}/api/status (OpenAPI: {API}/api/docs)")
    if not alive(stack.get("timer")):
        stack["timer"] = spawn([python, "-m", "scripts.timer_loop", "--interval", "5"], LOGS / "timer.log", REPO, env)
        print("Timer loop: Orchestrator.tick every 5 s (log .local/logs/timer.log)")
    LOCAL.mkdir(exist_ok=True)
    STACK_FILE.write_text(json.dumps(stack, indent=2))
    return stack


def _upload_samples(settings: Settings, connection: str) -> dict[str, str]:
    """Upload samples/*.pdf (made from samples/make_samples.py if there are none); name -> ETag."""
    from azure.storage.blob import BlobServiceClient

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
        blob = container.upload_blob(f"inputs/{path.name}", path.read_bytes(), overwrite=True)
        etags[path.name] = blob.get_blob_properties().etag.strip('"')
        print(f"uploaded {path.name} -> {settings.data_container}/inputs/{path.name}")
    return etags


def _wait_for_model(uploads: dict[str, str], timeout_s: float) -> dict:
    """Show progress until a model serves and nothing is pending; return the final status."""
    started = time.monotonic()
    shown = None
    while time.monotonic() - started < timeout_s:
        recorded = {d["name"]: d["etag"] for d in _get("/api/documents")["documents"]}
        all_recorded = all(recorded.get(name) == etag for name, etag in uploads.items())
        status = _get("/api/status")
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
    raise SystemExit(f"no model deployed after {timeout_s:.0f}s; see {API}/api/runs and .local/logs/")


def _wait_until_deployments_ready(backend: LocalBackend, timeout_s: float) -> None:
    """Restarted deployments load their model first; wait so the first request is answered."""
    deadline = time.monotonic() + timeout_s
    while creating := [d.name for d in backend.deployments() if d.state == "Creating"]:
        if time.monotonic() > deadline:
            raise SystemExit(f"deployments {creating} not ready in time; see {backend.work}/logs/")
        time.sleep(1)
    failed = [d.name for d in backend.deployments() if d.state == "Failed"]
    if failed:
        raise SystemExit(f"deployments {failed} did not start; see {backend.work}/logs/")


def up(args: argparse.Namespace) -> None:
    env = stack_env()
    settings = Settings.from_env(env)
    _start_services(env)
    backend = LocalBackend(settings)
    started = backend.resume()
    if started:
        print(f"Local backend: restarted {', '.join(started)}")
    uploads = _upload_samples(settings, env[STORAGE_CONNECTION])
    status = _wait_for_model(uploads, args.timeout)
    if not status["scoring_url"] and status["last_run"]:
        # Nothing new to train on, but the last attempt left no model (e.g. it failed): try again.
        print(f"No model is serving after run {status['last_run']['id']} ({status['last_run']['state']}); retraining")
        _post_json(API + "/api/retrain", {})
        status = _wait_for_model(uploads, args.timeout)
    last = status["last_run"]
    if last and last["state"] not in ("Deployed",):
        run = _get(f"/api/runs/{last['id']}")
        print(f"The last run ended {last['state']}: {run.get('error') or run['transitions'][-1]['detail']}")
    if not status["scoring_url"]:
        raise SystemExit("no model is serving; see GET /api/runs for what happened")
    _wait_until_deployments_ready(backend, args.timeout)
    model = status["serving_model"]
    print(f"\nServing {model['name']} version {model['version']} at {status['scoring_url']}")
    answer = _post_json(status["scoring_url"], {"prompt": args.prompt, "max_new_tokens": 24, "do_sample": False})
    print(f"\n> {args.prompt}\n{args.prompt}{answer['generations'][0][0]}\n")
    print("Chat with it:")
    print(f"  curl -s -X POST {status['scoring_url']} -H 'Content-Type: application/json' \\")
    print(f"       -d '{{\"prompt\": \"{args.prompt}\", \"max_new_tokens\": 30}}'")
    print(f"Status: curl -s {API}/api/status   Runs: {API}/api/runs   Documents: {API}/api/documents")
    print("Stop everything: python -m scripts.local_stack down")


def down(_: argparse.Namespace) -> None:
    stopped = LocalBackend(Settings.from_env(stack_env())).stop()
    stack = json.loads(STACK_FILE.read_text()) if STACK_FILE.exists() else {}
    for name in ("timer", "api", "azurite"):
        if alive(stack.get(name)):
            kill(stack[name])
            stopped.append(name)
    STACK_FILE.unlink(missing_ok=True)
    print(f"stopped: {', '.join(stopped) or 'nothing was running'} (data kept in .local/)")


def status(_: argparse.Namespace) -> None:
    try:
        print(json.dumps(_get("/api/status"), indent=2))
    except urllib.error.URLError:
        raise SystemExit(f"the API is not running at {API}; start it with `python -m scripts.local_stack up`") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="start the stack, upload the samples, wait for a model, chat once")
    up_parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="what to ask the deployed model")
    up_parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for a deployed model")
    up_parser.set_defaults(handler=up)
    commands.add_parser("down", help="stop everything the stack started").set_defaults(handler=down)
    commands.add_parser("status", help="print GET /api/status").set_defaults(handler=status)
    args = parser.parse_args()
    args.handler(args)


if __name__ == "__main__":
    main()
