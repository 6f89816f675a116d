"""Start and stop Azurite (the Azure Storage emulator) from the project's node_modules.

Used by the local stack and by the tests. Azurite's development account and key are public,
documented constants (not a secret): every Azurite install accepts them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from local_stack.processes import port_open

REPO = Path(__file__).resolve().parents[1]
AZURITE_BIN = REPO / "node_modules" / ".bin" / "azurite"
ACCOUNT = "devstoreaccount1"
# https://learn.microsoft.com/azure/storage/common/storage-use-azurite#http-connection-strings
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class AzuritePorts:
    blob: int
    queue: int
    table: int

    def connection_string(self, host: str = "127.0.0.1") -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://{host}:{self.blob}/{ACCOUNT};"
            f"QueueEndpoint=http://{host}:{self.queue}/{ACCOUNT};"
            f"TableEndpoint=http://{host}:{self.table}/{ACCOUNT};"
        )


def start(ports: AzuritePorts, location: Path | None, log_file: Path, detach: bool = False) -> subprocess.Popen:
    """Start Azurite on 127.0.0.1; in memory when `location` is None. Returns once all ports listen."""
    if not AZURITE_BIN.exists():
        raise FileNotFoundError(f"{AZURITE_BIN} not found: run `npm ci` in {REPO} to install Azurite (package.json)")
    storage = ["--inMemoryPersistence"] if location is None else ["--location", str(location)]
    cmd = [
        str(AZURITE_BIN),
        "--silent",
        "--disableTelemetry",
        "--skipApiVersionCheck",  # the Python SDKs may speak a newer API version than this Azurite
        *storage,
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(ports.blob),
        "--queueHost",
        "127.0.0.1",
        "--queuePort",
        str(ports.queue),
        "--tableHost",
        "127.0.0.1",
        "--tablePort",
        str(ports.table),
    ]
    if location is not None:
        location.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=detach
        )
    deadline = time.monotonic() + 60
    while not all(port_open(p) for p in (ports.blob, ports.queue, ports.table)):
        if proc.poll() is not None:
            raise RuntimeError(f"Azurite exited with {proc.returncode}; see {log_file}")
        if time.monotonic() > deadline:
            stop(proc.pid)
            raise TimeoutError(f"Azurite did not listen on {ports} within 60s; see {log_file}")
        time.sleep(0.2)
    return proc


def stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
