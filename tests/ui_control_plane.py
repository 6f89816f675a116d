"""The real control plane for the UI page tests: the FastAPI app of function_app.api on a loopback
port, over a real status table and container on Azurite, advanced by the real orchestrator and the real
aml backend. Only Azure's MLClient is faked (the recording fake, the Azure boundary), as in the
control-plane tests (tests/control_env.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from function_app import api as api_module
from function_app.services import Services
from tests.control_env import ControlEnv, make_env
from tests.ui_servers import serving


@dataclass
class ControlPlane:
    env: ControlEnv
    url: str  # API base URL, what the UI's API_BASE_URL holds

    def run_until(self, state: str, ticks: int = 20) -> None:
        """Tick (past the debounce) until the active run is in `state`."""
        for _ in range(ticks):
            run = self.env.tick(after_s=self.env.settings.debounce_seconds + 1)
            if run and run.state == state:
                return
        raise AssertionError(f"no run reached {state} in {ticks} ticks")


@pytest.fixture
def control_plane(azurite_connection: str) -> Iterator[ControlPlane]:
    env = make_env(azurite_connection, debounce_seconds=60)
    services = Services(env.settings, env.store, env.container, env.backend, env.orchestrator)
    # FastAPI's own seam for handing the app its dependencies; the app and its routes are the real ones.
    api_module.api.dependency_overrides[api_module.get_services] = lambda: services
    try:
        with serving(api_module.api) as url:
            yield ControlPlane(env, url)
    finally:
        api_module.api.dependency_overrides.pop(api_module.get_services, None)
