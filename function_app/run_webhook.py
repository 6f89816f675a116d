"""Tell an incoming webhook (Teams, Slack) that a run ended or the traffic was rolled back.

The message is JSON with a plain `text` field (what both accept) plus the run's id, state, reason and
figures for anything else that reads it. Sending never raises and never takes longer than the timeout:
the POST runs on its own thread, which is waited for at most that long (a server that accepts and then
drips or never answers cannot hold the tick up), and a failure is only logged.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
import urllib.request
from typing import Any

from function_app import run_states as rs
from function_app.rollback import RolledBack
from function_app.status_store import Run

log = logging.getLogger(__name__)


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
    """POST `message` to `url`; returns None when it was accepted (2xx), else why not. Never raises."""
    if not url:
        return None
    outcome: list[str | None] = []

    def post() -> None:
        request = urllib.request.Request(
            url, data=json.dumps(message).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310 - the operator's URL
                outcome.append(None if 200 <= answer.status < 300 else f"HTTP {answer.status}")
        except Exception as error:  # noqa: BLE001 - reported, never raised
            outcome.append(f"{type(error).__name__}: {error}")

    sender = threading.Thread(target=post, name="run-webhook", daemon=True)
    sender.start()
    sender.join(timeout_s)
    problem = outcome[0] if outcome else f"no answer within {timeout_s:g} s"
    if problem:
        log.warning("run webhook: %s was not told about run %s: %s", _host(url), message.get("run"), problem)
    return problem


def _host(url: str) -> str:
    """The webhook's host only: its path holds the token."""
    return urllib.parse.urlsplit(url).netloc
