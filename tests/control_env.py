"""A status store, data container and orchestrator on the session's Azurite, unique per test."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient

from function_app.orchestrator import Orchestrator
from function_app.settings import Settings
from function_app.status_store import Run, StatusStore
from tests.scripted_backend import ScriptedBackend


@dataclass
class ControlEnv:
    settings: Settings
    container: ContainerClient
    store: StatusStore
    backend: ScriptedBackend
    orchestrator: Orchestrator

    def upload(self, name: str, data: bytes) -> None:
        self.container.upload_blob(f"inputs/{name}", data, overwrite=True)

    def tick(self, after_s: float = 0) -> Run | None:
        """One timer tick, `after_s` seconds from now (the debounce is measured against upload times)."""
        return self.orchestrator.tick(datetime.now(timezone.utc) + timedelta(seconds=after_s))

    def settle(self, after_s: float, ticks: int = 40) -> Run:
        """Tick until the active run ends; return it."""
        run = None
        for _ in range(ticks):
            run = self.tick(after_s) or run
            if run and not self.store.current().active_run_id:
                return self.store.get_run(run.id)
        raise AssertionError(f"run did not end in {ticks} ticks: {run}")


def make_env(connection: str, **overrides) -> ControlEnv:
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(data_container=f"data{suffix}", status_table=f"status{suffix}", **overrides)
    container = BlobServiceClient.from_connection_string(connection).create_container(settings.data_container)
    store = StatusStore.open(TableServiceClient.from_connection_string(connection), settings.status_table)
    backend = ScriptedBackend()
    return ControlEnv(settings, container, store, backend, Orchestrator(store, backend, container, settings))


@pytest.fixture
def env(azurite_connection: str) -> ControlEnv:
    return make_env(azurite_connection, debounce_seconds=60)
