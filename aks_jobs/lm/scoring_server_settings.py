"""How every scoring server runs (AML deployments, local deployments, tests, benchmarks): one worker, many threads.

One worker owns the model, so requests share one batch (a second would load it again); its threads leave room
for the health probe beside MAX_REQUESTS requests. Why these numbers: docs/performance.md, "Serving".
"""

from __future__ import annotations

import math
from collections.abc import Mapping

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


# OpenMP threads waiting for work spin this many rounds (tens of microseconds) before they sleep: a decode step
# runs hundreds of short parallel operations, and waking sleeping threads for each made a step ~1.7x slower
# on 2 idle cores; a bound on the spin keeps idle threads off the cores (figures: docs/performance.md).
GOMP_SPIN_COUNT = 10_000


def openmp_environment(env: Mapping[str, str], cpu_quota: float | None, cpus: int) -> dict[str, str]:
    """What the scoring process adds to its environment before torch loads; a deployment's own settings win.

    Threads: no more than the pod's CPU quota (a team larger than the quota is throttled mid-step). Waiting:
    a bounded spin, unless the deployment chose OMP_WAIT_POLICY or GOMP_SPINCOUNT itself."""
    added = {}
    if "OMP_NUM_THREADS" not in env and cpu_quota is not None and cpu_quota < cpus:
        added["OMP_NUM_THREADS"] = str(max(1, math.floor(cpu_quota)))
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        added["GOMP_SPINCOUNT"] = str(GOMP_SPIN_COUNT)
    return added
