"""Session fixture: a real Azurite (in memory, free ports) for every test that needs Blob or Table.

Test modules import `azurite_connection`; each import is a separate fixture definition to pytest, so
the emulator itself is shared per test process here and stopped when the process exits.
"""

from __future__ import annotations

import atexit
import http.client
import shutil
import subprocess
import tempfile
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

from local_stack import azurite
from local_stack.processes import free_port

_shared: dict[str, object] = {}


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def shared_azurite() -> str:
    """Start Azurite once per test process; return its connection string."""
    if "connection" not in _shared:
        ports = azurite.AzuritePorts(free_port(), free_port(), free_port())
        log_dir = Path(tempfile.mkdtemp(prefix="azurite-"))
        proc = azurite.start(ports, location=None, log_file=log_dir / "azurite.log")  # kept if it fails to start
        atexit.register(shutil.rmtree, log_dir, ignore_errors=True)  # atexit runs last-in first: after _stop
        atexit.register(_stop, proc)
        _shared["connection"] = ports.connection_string()
    return str(_shared["connection"])


@pytest.fixture(scope="session")
def azurite_connection() -> str:
    return shared_azurite()


def put_blob_verbatim(container: ContainerClient, name: str, data: bytes) -> None:
    """Upload a blob whose name has '.'/'..' segments kept as they are. The SDK's HTTP stack collapses
    them in the URL; a plain PUT with the dots percent-encoded reaches storage, which keeps them."""
    sas = generate_container_sas(
        container.account_name,
        container.container_name,
        account_key=container.credential.account_key,
        permission=ContainerSasPermissions(write=True, create=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    url = urllib.parse.urlparse(container.url)
    path = "/".join(urllib.parse.quote(s, safe="").replace(".", "%2E") for s in name.split("/"))
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.request(
        "PUT",
        f"{url.path}/{path}?{sas}",
        body=data,
        headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06"},
    )
    response = connection.getresponse()
    assert response.status == 201, (response.status, response.read())
