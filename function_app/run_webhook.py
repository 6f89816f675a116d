"""Tell an incoming webhook (Teams, Slack) that a run ended or the traffic was rolled back.

The message is JSON with a plain `text` field (what both accept) plus the run's id, state, reason and
figures for anything else that reads it. Sending never raises and never takes longer than the timeout:
the POSTs run on their own thread, which is waited for at most that long (a server that accepts and then
drips or never answers cannot hold the tick up), and a failure is only logged.

A POST the webhook surely did not take is tried again, up to ATTEMPTS in all, with doubling pauses, all
within the same timeout: a refused connection, an unknown host, an answer 429 or 5xx. A POST that timed
out or lost its connection mid-way is not, since the message may have arrived: at most once then.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from function_app import run_states as rs
from function_app.rollback import RolledBack
from function_app.status_store import Run

log = logging.getLogger(__name__)

ATTEMPTS = 3
FIRST_PAUSE_S = 0.2  # then doubling


def run_message(run: Run) -> dict[str, Any]:
    """The JSON sent when `run` has ended."""
    reason = run.error or (run.transitions[-1]["detail"] if run.transitions else "")
    evaluation = run.evaluation or {}
    figures = {
        "documents": len(run.documents),
        "new_documents": len(run.new_documents),
        "perplexity": run.metrics.get("perplexity"),
        "eval_loss": run.metrics.get("eval_loss"),
        "candidate_perplexity": (evaluation.get("candidate") or {}).get("perplexity"),
        "serving_perplexity": (evaluation.get("serving") or {}).get("perplexity"),
        "model": f"{run.model_name} v{run.model_version}" if run.model_version else None,
        "deployment": run.deployment or None,
    }
    shown = ", ".join(
        f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
        for name, value in figures.items()
        if value not in (None, 0)
    )
    return {
        "text": f"GPT-2 PDF pipeline: run {run.id} {run.state}. {reason}" + (f" ({shown})" if shown else ""),
        "run": run.id,
        "state": run.state,
        "reason": reason,
        "figures": figures,
    }


def rollback_message(done: RolledBack) -> dict[str, Any]:
    """The JSON sent when the traffic was rolled back through the API."""
    reason = f"traffic rolled back from {done.replaced} to {done.serving}, asked by {done.requested_by}"
    model = f"{done.model_name} v{done.model_version}"
    return {
        "text": f"GPT-2 PDF pipeline: {reason}; {model} serves again.",
        "run": done.run or None,
        "state": rs.ROLLED_BACK,
        "reason": reason,
        "figures": {"model": model, "deployment": done.serving},
    }


def notify(url: str, message: dict[str, Any], timeout_s: float) -> str | None:
    """POST `message` to `url`; returns None when it was accepted (2xx), else why not. Never raises, and
    returns within `timeout_s` whatever the server does (retries included)."""
    if not url:
        return None
    deadline = time.monotonic() + timeout_s
    outcome: list[str | None] = []

    def post() -> None:
        for attempt in range(1, ATTEMPTS + 1):
            problem, again = _post(url, message, deadline)
            pause = FIRST_PAUSE_S * 2 ** (attempt - 1)
            if not again or attempt == ATTEMPTS or time.monotonic() + pause >= deadline:
                outcome.append(problem if attempt == 1 or problem is None else f"{problem} ({attempt} attempts)")
                return
            time.sleep(pause)

    sender = threading.Thread(target=post, name="run-webhook", daemon=True)
    sender.start()
    sender.join(timeout_s)
    problem = outcome[0] if outcome else f"no answer within {timeout_s:g} s"
    if problem:
        log.warning("run webhook: %s was not told about run %s: %s", _host(url), message.get("run"), problem)
    return problem


def _post(url: str, message: dict[str, Any], deadline: float) -> tuple[str | None, bool]:
    """One POST: (why it failed or None, whether the webhook surely did not take it and may be asked again)."""
    request = urllib.request.Request(
        url, data=json.dumps(message).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        timeout = max(deadline - time.monotonic(), 0.001)
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - the operator's URL
            return (None if 200 <= answer.status < 300 else f"HTTP {answer.status}"), False
    except urllib.error.HTTPError as error:  # an answer outside 2xx
        return f"HTTP {error.code}", error.code == 429 or error.code >= 500
    except urllib.error.URLError as error:  # no answer: only a connection never made is surely not delivered
        not_sent = isinstance(error.reason, ConnectionRefusedError | socket.gaierror)
        return f"{type(error.reason).__name__}: {error.reason}", not_sent
    except Exception as error:  # noqa: BLE001 - reported, never raised
        return f"{type(error).__name__}: {error}", False


def _host(url: str) -> str:
    """The webhook's host only: its path holds the token."""
    return urllib.parse.urlsplit(url).netloc
