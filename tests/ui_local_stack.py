"""The local stack as `make demo` starts it (local_stack: the API, the timer loop and the web UI;
local backend: real preprocess/train/evaluate processes, azmlinfsrv deployments behind the local router),
but on free ports, in a temporary folder and on the tests' Azurite, so it can run beside a developer's
`make demo`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from local_stack import stack as local_stack
from local_stack.processes import free_port


@contextmanager
def running_local_stack(connection: str, folder: Path, *, timer_interval_s: float = 2) -> Iterator[dict[str, str]]:
    """Start the stack's processes; yield its settings (environment) with API_BASE_URL and UI_URL added."""
    name = f"e2e{uuid.uuid4().hex[:10]}"
    config = local_stack.StackConfig(
        folder=folder, api_port=free_port(), ui_port=free_port(), timer_interval_s=timer_interval_s
    )
    env = local_stack.stack_env(
        config,
        {
            **os.environ,
            # What the tests rely on, whatever the developer's environment says.
            "DataStorage": connection,
            "DATA_CONTAINER": name,
            "STATUS_TABLE": name,
            "PIPELINE_BACKEND": "local",
            "BASE_MODEL": "offline",
            "TRAIN_PRESET": "memorize",
            "DEBOUNCE_SECONDS": "3",
            "LOCAL_SCORING_PORTS": f"{free_port()},{free_port()}",
            "LOCAL_ROUTER_PORT": str(free_port()),
            "UI_STATUS_REFRESH_S": "2",
        },
    )
    try:
        local_stack.start_services(config, env)
        yield {**env, "API_BASE_URL": config.api_url, "UI_URL": config.ui_url}
    finally:
        local_stack.stop_services(config, env)  # deployments and the router included


def logs(folder: Path, chars: int = 3000) -> str:
    """The end of every log the stack wrote, for a failing test's message."""
    parts = []
    for log in sorted(folder.rglob("*.log")):
        parts.append(f"--- {log.relative_to(folder)}\n{log.read_text(errors='replace')[-chars:]}")
    return "\n".join(parts)
