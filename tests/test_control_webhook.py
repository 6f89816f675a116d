"""RUN_WEBHOOK_URL against real local HTTP servers (127.0.0.1): a run's end (Deployed, Rejected, Failed,
RolledBack) and a rollback through the API POST a JSON message with a plain `text`; a webhook that answers
500, refuses connections or never answers changes nothing about the run and holds the tick up no longer
than RUN_WEBHOOK_TIMEOUT_S."""

from __future__ import annotations

import contextlib
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
    """Answers each POST with the next of `statuses` (the last one from then on)."""

    def __init__(self, *statuses: int, port: int = 0) -> None:
        self.statuses, self.messages = statuses, []
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/T0K3N"


class _Handler(BaseHTTPRequestHandler):
    server: _Webhook

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.messages.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(self.server.statuses[min(len(self.server.messages), len(self.server.statuses)) - 1])
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


def _webhook(*statuses: int) -> Iterator[_Webhook]:
    server = _Webhook(*statuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


served = contextlib.contextmanager(_webhook)


@pytest.fixture
def webhook() -> Iterator[_Webhook]:
    yield from _webhook(200)


@pytest.fixture
def broken_webhook() -> Iterator[_Webhook]:
    yield from _webhook(500)


@pytest.fixture
def silent() -> Iterator[socket.socket]:
    """A server that accepts connections (the kernel completes them) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture
def silent_url(silent: socket.socket) -> str:
    return f"http://127.0.0.1:{silent.getsockname()[1]}/hook"


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
    if kind == "answers 500":  # asked again while the timeout allows, never more than ATTEMPTS times
        states = [m["state"] for _, m in broken_webhook.messages]
        assert states == [rs.DEPLOYED] * len(states) and 1 <= len(states) <= run_webhook.ATTEMPTS


def test_notify_returns_within_the_timeout_whatever_the_server_does(silent_url: str) -> None:
    started = time.monotonic()
    problem = run_webhook.notify(silent_url, {"text": "hi", "run": "r"}, 0.3)
    assert time.monotonic() - started < 1.5 and problem is not None


def test_no_url_sends_nothing() -> None:
    assert run_webhook.notify("", {"text": "hi"}, 0.3) is None


# --- retries: only what the webhook surely did not take, within the same timeout ------------------------

MESSAGE = {"text": "GPT-2 PDF pipeline: run r Deployed.", "run": "r", "state": rs.DEPLOYED}


def test_a_webhook_that_fails_first_is_asked_again_and_takes_the_message() -> None:
    with served(503, 200) as server:
        started = time.monotonic()
        assert run_webhook.notify(server.url, MESSAGE, 2.0) is None
        assert [m for _, m in server.messages] == [MESSAGE, MESSAGE]
        assert time.monotonic() - started < 2.0


def test_a_webhook_not_listening_yet_is_tried_again() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: connections are refused until the server starts
    servers: list[_Webhook] = []

    def start_later() -> None:
        time.sleep(0.1)
        servers.append(_Webhook(200, port=port))
        servers[0].serve_forever()

    threading.Thread(target=start_later, daemon=True).start()
    try:
        assert run_webhook.notify(f"http://127.0.0.1:{port}/hooks/T0K3N", MESSAGE, 3.0) is None
        assert [m for _, m in servers[0].messages] == [MESSAGE]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_a_post_that_may_have_arrived_is_not_sent_again(silent: socket.socket, silent_url: str) -> None:
    """At most once when the outcome is unknown: the server took the connection and never answered."""
    problem = run_webhook.notify(silent_url, MESSAGE, 1.0)
    assert problem is not None and "attempts" not in problem
    silent.setblocking(False)
    connections = []
    with contextlib.suppress(BlockingIOError):
        while True:
            connections.append(silent.accept()[0])
    for connection in connections:
        connection.close()
    assert len(connections) == 1


def test_a_webhook_that_keeps_failing_is_asked_at_most_attempts_times_within_the_timeout() -> None:
    with served(500) as server:
        started = time.monotonic()
        problem = run_webhook.notify(server.url, MESSAGE, 3.0)
        assert time.monotonic() - started < 3.0
        assert problem == f"HTTP 500 ({run_webhook.ATTEMPTS} attempts)"
        assert len(server.messages) == run_webhook.ATTEMPTS
    with served(500) as server:  # a short timeout leaves room for fewer attempts, never a later one
        started = time.monotonic()
        assert run_webhook.notify(server.url, MESSAGE, 0.3).startswith("HTTP 500")
        time.sleep(0.5)  # a retry after notify returned would land here
        assert len(server.messages) < run_webhook.ATTEMPTS
