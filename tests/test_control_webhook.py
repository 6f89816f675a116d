"""RUN_WEBHOOK_URL against real local HTTP servers (127.0.0.1): a run's end (Deployed, Rejected, Failed,
RolledBack) and a rollback through the API POST a JSON message with a plain `text`; a webhook that answers
500, refuses connections or never answers changes nothing about the run and holds the tick up no longer
than RUN_WEBHOOK_TIMEOUT_S."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from function_app import run_states as rs
from function_app import run_webhook
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.control_env import ControlEnv, make_env
from tests.fakes.aml_service import failing, promoting, rejecting

SETTLED = 61
TIMEOUT_S = 0.5


class _Webhook(ThreadingHTTPServer):
    def __init__(self, status: int) -> None:
        self.status, self.messages = status, []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/T0K3N"


class _Handler(BaseHTTPRequestHandler):
    server: _Webhook

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.messages.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(self.server.status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


def _webhook(status: int) -> Iterator[_Webhook]:
    server = _Webhook(status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhook() -> Iterator[_Webhook]:
    yield from _webhook(200)


@pytest.fixture
def broken_webhook() -> Iterator[_Webhook]:
    yield from _webhook(500)


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A server that accepts connections (the kernel completes them) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        listener.close()


def _env(connection: str, url: str) -> ControlEnv:
    return make_env(connection, debounce_seconds=60, run_webhook_url=url, run_webhook_timeout_s=TIMEOUT_S)


def _settle_timed(env: ControlEnv) -> tuple:
    """Settle the run, returning it and the longest tick."""
    longest, run = 0.0, None
    for i in range(40):
        started = time.monotonic()
        run = env.tick(SETTLED + i * 60) or run
        longest = max(longest, time.monotonic() - started)
        if run and not env.store.current().active_run_id:
            return env.store.get_run(run.id), longest
    raise AssertionError("the run did not end")


def test_every_run_end_is_posted_with_a_plain_text(azurite_connection: str, webhook: _Webhook) -> None:  # noqa: F811
    env = _env(azurite_connection, webhook.url)
    env.aml.plans += [promoting(), rejecting(), failing("train", "CUDA out of memory")]
    env.upload("a.pdf", b"%PDF-1.4 a")
    deployed = env.settle(SETTLED)
    env.upload("b.pdf", b"%PDF-1.4 b")
    rejected = env.settle(SETTLED)
    env.upload("c.pdf", b"%PDF-1.4 c")
    failed = env.settle(SETTLED)
    assert [m["state"] for _, m in webhook.messages] == [rs.DEPLOYED, rs.REJECTED, rs.FAILED]
    assert {kind for kind, _ in webhook.messages} == {"application/json"}
    (_, on_deployed), (_, on_rejected), (_, on_failed) = webhook.messages
    assert on_deployed["run"] == deployed.id and on_deployed["text"].startswith(
        f"GPT-2 PDF pipeline: run {deployed.id} Deployed. 100% traffic on gpt2-pdf-v1"
    )
    assert on_deployed["figures"]["candidate_perplexity"] == 12.5 and on_deployed["figures"]["model"] == "gpt2-pdf v1"
    assert "candidate_perplexity 12.5" in on_deployed["text"]
    assert on_rejected["run"] == rejected.id and on_rejected["reason"] == "perplexity 30 is worse than 12.5"
    assert on_failed["run"] == failed.id and "CUDA out of memory" in on_failed["reason"] == failed.error
    assert "CUDA out of memory" in on_failed["text"]


def test_a_rolled_back_candidate_and_a_rollback_are_posted(azurite_connection: str, webhook: _Webhook) -> None:  # noqa: F811
    env = _env(azurite_connection, webhook.url)
    for name in ("a.pdf", "b.pdf"):
        env.upload(name, f"%PDF-1.4 {name}".encode())
        assert env.settle(SETTLED).state == rs.DEPLOYED
    env.aml.answers["gpt2-pdf-v3"] = ""  # the third candidate answers its smoke test with no text
    env.upload("c.pdf", b"%PDF-1.4 c")
    broken = env.settle(SETTLED)
    assert broken.state == rs.ROLLED_BACK
    env.orchestrator.request_rollback(datetime.now(UTC), "ops")
    states = [m["state"] for _, m in webhook.messages]
    assert states == [rs.DEPLOYED, rs.DEPLOYED, rs.ROLLED_BACK, rs.ROLLED_BACK]
    candidate, rollback = webhook.messages[2][1], webhook.messages[3][1]
    assert candidate["run"] == broken.id and "smoke test failed" in candidate["reason"]
    assert rollback["text"] == (
        "GPT-2 PDF pipeline: traffic rolled back from gpt2-pdf-v2 to gpt2-pdf-v1, asked by ops; "
        "gpt2-pdf v1 serves again."
    )


@pytest.mark.parametrize("kind", ["answers 500", "never answers", "refuses connections"])
def test_a_failing_webhook_never_fails_or_holds_up_the_run(
    azurite_connection: str,  # noqa: F811
    broken_webhook: _Webhook,
    silent_url: str,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{unused.getsockname()[1]}/hook"  # closed again below: nothing listens
    url = {"answers 500": broken_webhook.url, "never answers": silent_url, "refuses connections": refused}[kind]
    env = _env(azurite_connection, url)
    env.upload("a.pdf", b"%PDF-1.4 a")
    run, longest_tick = _settle_timed(env)
    assert run.state == rs.DEPLOYED and env.serving() == "gpt2-pdf-v1"
    assert env.store.current().serving_deployment == "gpt2-pdf-v1" and not env.store.current().active_run_id
    # The webhook's wait is bounded by its timeout (the rest of a tick is a few Table calls on Azurite).
    assert longest_tick < TIMEOUT_S + 3
    [warning] = [r.getMessage() for r in caplog.records if "run webhook" in r.getMessage()]
    assert f"was not told about run {run.id}" in warning and "T0K3N" not in warning  # the token stays out of logs
    if kind == "answers 500":
        assert [m["state"] for _, m in broken_webhook.messages] == [rs.DEPLOYED]


def test_notify_returns_within_the_timeout_whatever_the_server_does(silent_url: str) -> None:
    started = time.monotonic()
    problem = run_webhook.notify(silent_url, {"text": "hi", "run": "r"}, 0.3)
    assert time.monotonic() - started < 1.5 and problem is not None


def test_no_url_sends_nothing() -> None:
    assert run_webhook.notify("", {"text": "hi"}, 0.3) is None
