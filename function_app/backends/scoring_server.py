"""How every scoring server runs (local deployments, AML deployments, tests): one worker process, many threads.

One process owns the model: a second worker would load it again and split the requests between two smaller
batches. Its threads only parse a request and wait while aks_jobs/lm/batcher.py decodes everything that
arrived together in one batched loop, so the thread count is how many concurrent requests can share a batch:
32, the concurrency the serving target is set at (half of generation.MAX_SEQUENCES rows at one row each).
gunicorn runs threaded (gthread) workers when given --threads; azmlinfsrv's own per-request timeout works
only on a main thread, so the endpoint's request timeout is what bounds a request then.
"""
from __future__ import annotations

WORKER_COUNT = 1
THREADS = 32


def server_env(*gunicorn_args: str) -> dict[str, str]:
    """Environment for azmlinfsrv: its WORKER_COUNT, and gunicorn's extra options (read from GUNICORN_CMD_ARGS)."""
    return {"WORKER_COUNT": str(WORKER_COUNT), "GUNICORN_CMD_ARGS": " ".join((f"--threads {THREADS}", *gunicorn_args))}
