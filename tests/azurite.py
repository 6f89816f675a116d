"""Session fixture: a real Azurite (in memory, free ports) for every test that needs Blob or Table.

Test modules import `azurite_connection`; each import is a separate fixture definition to pytest, so
the emulator itself is shared per test process here and stopped when the process exits.
"""
from __future__ import annotations

import atexit
import subprocess
import tempfile
from pathlib import Path

import pytest

from scripts import azurite

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
        ports = azurite.AzuritePorts(azurite.free_port(), azurite.free_port(), azurite.free_port())
        log_file = Path(tempfile.mkdtemp(prefix="azurite-")) / "azurite.log"
        proc = azurite.start(ports, location=None, log_file=log_file)
        atexit.register(_stop, proc)
        _shared["connection"] = ports.connection_string()
    return str(_shared["connection"])


@pytest.fixture(scope="session")
def azurite_connection() -> str:
    return shared_azurite()
