"""local_stack (what `make demo` runs): its processes, their URLs, `status` and `down`, on free ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from function_app.settings import Settings
from local_stack import stack as local_stack
from local_stack.processes import alive
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.ui_local_stack import running_local_stack


def test_stack_serves_the_api_and_the_ui_and_down_ends_every_process(azurite_connection: str, tmp_path: Path) -> None:  # noqa: F811 - fixture
    with running_local_stack(azurite_connection, tmp_path) as stack:
        processes = json.loads((tmp_path / "stack.json").read_text())
        assert set(processes) == {"api", "timer", "ui"}  # DataStorage given: no Azurite of its own
        assert all(alive(p) for p in processes.values())
        assert httpx.get(f"{stack['API_BASE_URL']}/api/status", timeout=10).json()["state"] == "Idle"
        assert httpx.get(stack["UI_URL"], timeout=10).status_code == 200
        assert httpx.get(f"{stack['UI_URL']}/_stcore/health", timeout=10).text == "ok"

        shown = subprocess.run(
            [sys.executable, "-m", "local_stack", "status"],
            cwd=local_stack.REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env={
                **os.environ,
                "LOCAL_STACK_DIR": str(tmp_path),
                "LOCAL_STACK_API_PORT": stack["API_BASE_URL"].rsplit(":", 1)[1],
                "LOCAL_STACK_UI_PORT": stack["UI_URL"].rsplit(":", 1)[1],
            },
        )
        assert shown.returncode == 0, shown.stderr
        lines = {line.split()[0]: line for line in shown.stdout.splitlines()[:4]}
        assert f"running (pid {processes['ui']['pid']})" in lines["ui"] and stack["UI_URL"] in lines["ui"]
        assert "not running" in lines["azurite"] and '"state": "Idle"' in shown.stdout
    assert not any(alive(p) for p in processes.values())
    assert not (tmp_path / "stack.json").exists()


def test_stack_folder_and_ports_come_from_the_environment() -> None:
    config = local_stack.StackConfig.from_env(
        {"LOCAL_STACK_DIR": "out/stack2", "LOCAL_STACK_API_PORT": "7072", "LOCAL_STACK_UI_PORT": "8502"}
    )
    assert (config.folder, config.api_url, config.ui_url) == (
        local_stack.REPO / "out" / "stack2",
        "http://127.0.0.1:7072",
        "http://127.0.0.1:8502",
    )
    env = local_stack.stack_env(config, {"PATH": "/bin"})
    assert env["LOCAL_WORK_DIR"] == str(local_stack.REPO / "out" / "stack2" / "work")  # jobs and models follow it
    assert local_stack.StackConfig.from_env({}) == local_stack.StackConfig(folder=local_stack.REPO / ".local")
    with pytest.raises(SystemExit, match="LOCAL_STACK_UI_PORT='85o1' is not a TCP port"):
        local_stack.StackConfig.from_env({"LOCAL_STACK_UI_PORT": "85o1"})


def test_the_sample_upload_never_overwrites_a_document(azurite_connection: str) -> None:  # noqa: F811 - fixture
    """`up` uploads samples/*.pdf as the web UI uploads: a document already under a sample's name stays as it is."""
    settings = Settings(data_container=f"samples{uuid.uuid4().hex[:10]}")
    container = BlobServiceClient.from_connection_string(azurite_connection).create_container(settings.data_container)
    sample = sorted((local_stack.REPO / "samples").glob("*.pdf"))[0]
    theirs = b"%PDF-1.4 someone else's document"
    container.upload_blob(f"inputs/{sample.name}", theirs)

    first = local_stack._upload_samples(settings, azurite_connection)
    assert container.download_blob(f"inputs/{sample.name}").readall() == theirs
    beside = [name for name in first if name.startswith(sample.stem + "-")]
    assert len(beside) == 1 and container.download_blob(f"inputs/{beside[0]}").readall() == sample.read_bytes()
    # A second `up` writes nothing: every blob keeps its ETag, so no document looks changed.
    assert local_stack._upload_samples(settings, azurite_connection) == first
