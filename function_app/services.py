"""Builds the objects every entry point shares (settings, status table, data container, backend).

One set per process, made on first use: the Functions worker, uvicorn and the local timer loop
all call `get()`; tests build their own `Services` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import ContainerClient

from function_app.backends import create_backend
from function_app.backends.base import PipelineBackend
from function_app.orchestrator import Orchestrator
from function_app.settings import Settings, StorageConnection
from function_app.status_store import StatusStore
from function_app.storage import blob_service, table_service


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: StatusStore
    container: ContainerClient
    backend: PipelineBackend
    orchestrator: Orchestrator


def build(settings: Settings, connection: StorageConnection, backend: PipelineBackend | None = None) -> Services:
    container = blob_service(connection).get_container_client(settings.data_container)
    try:
        container.create_container()
    except ResourceExistsError:
        pass
    except HttpResponseError as error:
        # In Azure, Bicep makes the container and the Function identity only reads blobs there
        # (Storage Blob Data Reader): creating it is refused, and that is expected.
        if error.status_code != 403:
            raise
    store = StatusStore.open(table_service(connection), settings.status_table)
    backend = backend or create_backend(settings)
    return Services(settings, store, container, backend, Orchestrator(store, backend, container, settings))


@lru_cache(maxsize=1)
def get() -> Services:
    return build(Settings.from_env(), StorageConnection.from_env())
