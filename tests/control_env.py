"""The real control plane for tests: status store and data container on the session's Azurite (unique per
test), the orchestrator driving the real aml backend, whose MLClient is the recording fake
(tests/fakes/recording_ml_client.py, the one fake: Azure is unreachable here) with the workspace moving on by
itself (tests/fakes/aml_service.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient

from function_app.backends.aml import AmlBackend
from function_app.orchestrator import Orchestrator
from function_app.settings import Settings
from function_app.status_store import Run, StatusStore
from tests.fakes.aml_service import AmlService
from tests.fakes.recording_ml_client import RecordingMLClient

AML_WORKSPACE = {
    "pipeline_backend": "aml",
    "aml_subscription_id": "00000000-0000-0000-0000-000000000000",
    "aml_resource_group": "rg-gpt2",
    "aml_workspace": "ws-gpt2",
    "aml_environment_image": "gpt2acr.azurecr.io/gpt2-pdf-jobs:7",
}
TIMER_PERIOD_S = 60  # the timer fires every minute (TIMER_SCHEDULE)


@dataclass
class ControlEnv:
    settings: Settings
    container: ContainerClient
    store: StatusStore
    azure: RecordingMLClient  # what would have been sent to Azure
    aml: AmlService  # what the workspace does by itself: job plans, deployments starting, scoring answers
    backend: AmlBackend
    orchestrator: Orchestrator

    def upload(self, name: str, data: bytes) -> None:
        self.container.upload_blob(f"inputs/{name}", data, overwrite=True)

    def tick(self, after_s: float = 0) -> Run | None:
        """One timer tick, `after_s` seconds from now (the debounce is measured against upload times)."""
        return self.orchestrator.tick(datetime.now(UTC) + timedelta(seconds=after_s))

    def settle(self, after_s: float, ticks: int = 40) -> Run:
        """Tick once a minute from `after_s` on, as the timer does, until the active run ends; return it."""
        run = None
        for i in range(ticks):
            run = self.tick(after_s + i * TIMER_PERIOD_S) or run
            if run and not self.store.current().active_run_id:
                return self.store.get_run(run.id)
        raise AssertionError(f"run did not end in {ticks} ticks: {run}")

    def serving(self) -> str | None:
        """The deployment taking all of the endpoint's traffic."""
        return next((name for name, share in self.azure.traffic().items() if share == 100), None)


def make_env(connection: str, *, endpoint: bool = True, **overrides) -> ControlEnv:
    """`endpoint`: the workspace's online endpoint exists already (the first deployment creates it otherwise)."""
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(
        data_container=f"data{suffix}", status_table=f"status{suffix}", **{**AML_WORKSPACE, **overrides}
    )
    container = BlobServiceClient.from_connection_string(connection).create_container(settings.data_container)
    store = StatusStore.open(TableServiceClient.from_connection_string(connection), settings.status_table)
    azure = RecordingMLClient(settings.aml_subscription_id, settings.aml_resource_group, settings.aml_workspace)
    if endpoint:
        azure.add_endpoint(settings.aml_endpoint_name, compute=settings.aml_compute)
    backend = AmlBackend(settings, ml_client=azure)
    return ControlEnv(
        settings, container, store, azure, AmlService(azure), backend, Orchestrator(store, backend, container, settings)
    )


@pytest.fixture
def env(azurite_connection: str) -> ControlEnv:
    return make_env(azurite_connection, debounce_seconds=60)


@pytest.fixture
def api_env(azurite_connection: str, monkeypatch: pytest.MonkeyPatch) -> ControlEnv:
    """An env that the HTTP API and the Functions serve (services.get() returns its objects); no debounce,
    LOCAL_API_KEY s3cret."""
    from function_app import services

    env = make_env(azurite_connection, debounce_seconds=0, local_api_key="s3cret")
    svc = services.Services(env.settings, env.store, env.container, env.backend, env.orchestrator)
    monkeypatch.setattr(services, "get", lambda: svc)
    return env
