"""gunicorn configuration for local scoring servers: listen on 127.0.0.1 only.

azmlinfsrv 1.5.1 has no host option: amlserver.run() passes `-b 0.0.0.0:PORT` (constants.DEFAULT_HOST) on
gunicorn's command line, which overrides config files and GUNICORN_CMD_ARGS. gunicorn calls the on_starting
hook after reading all of them and before the arbiter creates its sockets (gunicorn/arbiter.py start()), so
the hook moves every bind address to the loopback interface, keeping its port.
"""

from __future__ import annotations

LOOPBACK = "127.0.0.1"


def loopback_binds(binds: list[str]) -> list[str]:
    return [f"{LOOPBACK}:{bind.rsplit(':', 1)[-1]}" for bind in binds]


def on_starting(server) -> None:  # gunicorn server hook
    server.cfg.set("bind", loopback_binds(server.cfg.bind))
