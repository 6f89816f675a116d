"""The local stack the way scripts.local_stack runs it (uvicorn function_app.api:api + scripts.timer_loop,
local backend: real preprocess/train/evaluate processes, azmlinfsrv deployments behind the local router),
but on free ports and in a temporary folder, so it can run beside a developer's `make demo`."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from function_app.backends.local import LocalBackend
from function_app.settings import Settings
from tests.scoring_server import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def running_local_stack(connection: str, folder: Path, *, timer_interval_s: float = 2) -> Iterator[dict[str, str]]:
    """Start the API and the timer loop; yield the settings (environment) with API_BASE_URL added."""
    name = f"e2e{uuid.uuid4().hex[:10]}"
    env = {
        "DataStorage": connection, "DATA_CONTAINER": name, "STATUS_TABLE": name,
        "PIPELINE_BACKEND": "local", "BASE_MODEL": "offline", "TRAIN_PRESET": "memorize", "DEBOUNCE_SECONDS": "3",
        "LOCAL_WORK_DIR": str(folder / "work"), "LOCAL_SCORING_PORTS": f"{free_port()},{free_port()}",
        "LOCAL_ROUTER_PORT": str(free_port()), "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db",
    }
    api_port = free_port()
    python = sys.executable
    processes = {
        "api": _spawn([python, "-m", "uvicorn", "function_app.api:api", "--host", "127.0.0.1", "--port",
                       str(api_port)], env, folder / "api.log"),
        "timer": _spawn([python, "-m", "scripts.timer_loop", "--interval", str(timer_interval_s)], env,
                        folder / "timer.log"),
    }
    api_url = f"http://127.0.0.1:{api_port}"
    try:
        _wait_healthy(api_url, processes["api"], folder / "api.log")
        yield {**env, "API_BASE_URL": api_url}
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=20)
        LocalBackend(Settings.from_env(env)).stop()  # deployments and the router outlive their starter


def logs(folder: Path, chars: int = 3000) -> str:
    """The end of every log the stack wrote, for a failing test's message."""
    parts = []
    for log in sorted(folder.rglob("*.log")):
        parts.append(f"--- {log.relative_to(folder)}\n{log.read_text(errors='replace')[-chars:]}")
    return "\n".join(parts)


def _spawn(argv: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, cwd=REPO_ROOT, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the API did not become healthy:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.25)
