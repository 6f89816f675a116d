"""Servers the UI tests talk to over real HTTP on loopback: any ASGI app under uvicorn in a thread,
and the Streamlit UI itself as a subprocess (for the browser test)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from local_stack.processes import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def serving(app, *, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app on 127.0.0.1; yield its base URL; stop it on exit."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port or free_port(), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start (port taken?)")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def running_streamlit(env: Mapping[str, str], *, startup_timeout_s: float = 60) -> Iterator[str]:
    """`streamlit run ui/app.py` headless on a free loopback port; yield its URL."""
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "streamlit"),
        "run",
        str(REPO_ROOT / "ui" / "app.py"),
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + startup_timeout_s
            while not _healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"streamlit did not start:\n{log.read()[-3000:]}")
                time.sleep(0.25)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
