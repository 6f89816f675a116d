"""How every scoring server runs (AML deployments, local deployments, tests, benchmarks): one worker, many threads.

One worker owns the model, so requests share one batch (a second would load it again); its threads leave room
for the health probe beside MAX_REQUESTS requests. Why these numbers: docs/performance.md, "Serving".
"""

from __future__ import annotations

WORKER_COUNT = 1
MAX_REQUESTS = 48
THREADS = 64  # MAX_REQUESTS + 16 for health probes and quick refusals
REQUEST_TIMEOUT_S = 60  # the endpoint's; a request's own deadline is 5 s shorter so its answer gets out


def server_env(*gunicorn_args: str) -> dict[str, str]:
    """Environment for azmlinfsrv: its WORKER_COUNT, gunicorn's extra options (read from GUNICORN_CMD_ARGS; gthread
    workers when given --threads) and the scoring script's bounds (serving_limits reads SCORING_*)."""
    return {
        "WORKER_COUNT": str(WORKER_COUNT),
        "GUNICORN_CMD_ARGS": " ".join((f"--threads {THREADS}", *gunicorn_args)),
        "SCORING_MAX_REQUESTS": str(MAX_REQUESTS),
        "SCORING_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S - 5),
    }
