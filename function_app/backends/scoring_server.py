"""How every scoring server runs (local deployments, AML deployments, tests): one worker process, many threads.

One process owns the model: a second worker would load it again and split the requests between two smaller
batches. Its threads only validate a request and follow its tokens while aks_jobs/lm/batcher.py decodes every
running request together, so the server takes MAX_REQUESTS requests at once (running plus queued; more get
503 with Retry-After at once) and keeps the other threads free: the health probe never waits behind generation.
gunicorn runs threaded (gthread) workers when given --threads; azmlinfsrv's own per-request timeout works
only on a main thread, so score.py enforces its own deadline, below the endpoint's request timeout.
"""
from __future__ import annotations

from pathlib import Path

from pipeline_contracts.scoring import ScoreResponse, StreamError, StreamPiece

WORKER_COUNT = 1
MAX_REQUESTS = 48
THREADS = 64  # MAX_REQUESTS + 16 for health probes and quick refusals
REQUEST_TIMEOUT_S = 60  # the endpoint's; a request's own deadline is 5 s shorter so its answer gets out
LOOPBACK_CONFIG = Path(__file__).with_name("gunicorn_loopback.py")


def server_env(*gunicorn_args: str) -> dict[str, str]:
    """Environment for azmlinfsrv: its WORKER_COUNT, gunicorn's extra options (read from GUNICORN_CMD_ARGS) and
    the scoring script's bounds (lm.serving_limits reads SCORING_*)."""
    return {"WORKER_COUNT": str(WORKER_COUNT),
            "GUNICORN_CMD_ARGS": " ".join((f"--threads {THREADS}", *gunicorn_args)),
            "SCORING_MAX_REQUESTS": str(MAX_REQUESTS),
            "SCORING_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S - 5)}


def local_server_env() -> dict[str, str]:
    """For scoring servers on this machine: loopback only, and no shared gunicorn control socket in $HOME."""
    return server_env("--no-control-socket", f"--config {LOOPBACK_CONFIG}")


def streamed_answer(body: str) -> tuple[list[str], ScoreResponse]:
    """A streamed scoring answer (Server-Sent Events, see aks_jobs/score.py): the text pieces joined per sequence
    (by "index"), and the final `done` event's answer. Raises ValueError for an `error` event or no `done`."""
    texts: dict[int, str] = {}
    for block in body.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line]
        if not lines:
            continue
        event = next((line[len("event: "):] for line in lines if line.startswith("event: ")), "message")
        data = "\n".join(line[len("data: "):] for line in lines if line.startswith("data: "))
        if event == "done":
            return [texts[i] for i in sorted(texts)], ScoreResponse.model_validate_json(data)
        if event == "error":
            raise ValueError(f"the stream ended with an error: {StreamError.model_validate_json(data).message}")
        piece = StreamPiece.model_validate_json(data)
        texts[piece.index] = texts.get(piece.index, "") + piece.text
    raise ValueError(f"the stream ended without its done event: {body[-300:]!r}")
