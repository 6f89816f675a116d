"""The real AML scoring server (azmlinfsrv + aks_jobs/score.py) on this machine, for tests and benchmarks.

Local deployments (local_stack.deployment) use the same environment: loopback only, no shared control socket.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from aks_jobs.lm.scoring_server_settings import server_env
from local_stack.processes import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
ENTRY_SCRIPT = REPO_ROOT / "aks_jobs" / "score.py"
LOOPBACK_CONFIG = Path(__file__).with_name("gunicorn_loopback.py")


class ScoringServerError(RuntimeError):
    """The server exited or never became ready; the message carries the end of its log."""


def local_server_env() -> dict[str, str]:
    """For scoring servers on this machine: loopback only, and no shared gunicorn control socket in $HOME."""
    return server_env("--no-control-socket", f"--config {LOOPBACK_CONFIG}")


@contextmanager
def running_scoring_server(
    model_dir: Path | str,
    port: int | None = None,
    *,
    env: Mapping[str, str] | None = None,
    startup_timeout_s: float = 180.0,
) -> Iterator[str]:
    """Start `azmlinfsrv --entry_script aks_jobs/score.py`, wait until it answers, yield its base URL.

    The server is always stopped on exit. `env` adds variables (e.g. MODEL_NAME, WORKER_COUNT).
    """
    port = port or free_port()
    azmlinfsrv = Path(sys.executable).parent / "azmlinfsrv"
    process_env = {
        **os.environ,
        # Loopback only; parallel test servers must not share $HOME/.gunicorn/gunicorn.ctl.
        **local_server_env(),
        **(env or {}),
        # The server reads a config.json from its app root: keep that root away from model folders.
        "AML_APP_ROOT": str(REPO_ROOT),
    }
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [str(azmlinfsrv), "--entry_script", str(ENTRY_SCRIPT), "--model_dir", str(model_dir), "--port", str(port)],
            cwd=REPO_ROOT,
            env=process_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # own process group: gunicorn's workers are stopped with the master
        try:
            base_url = f"http://127.0.0.1:{port}"
            _wait_until_ready(process, base_url, startup_timeout_s, log)
            yield base_url
        finally:
            _stop(process)


def _wait_until_ready(process: subprocess.Popen, base_url: str, timeout_s: float, log) -> None:
    # GET / is the server's liveness route; it answers only once a worker has run init().
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ScoringServerError(f"azmlinfsrv exited with code {process.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(base_url + "/", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise ScoringServerError(f"azmlinfsrv not ready after {timeout_s:.0f} s:\n{_tail(log)}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _tail(log, chars: int = 4000) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-chars:]
