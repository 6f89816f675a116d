"""Detached local processes: start one that outlives its caller, check it, end it with its children."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import psutil

_children: list[subprocess.Popen] = []  # polled so finished children do not linger as zombies


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def spawn(argv: list[str], log_path: Path, cwd: Path, env: dict[str, str]) -> dict:
    """Start `argv` in its own session (it survives the Function invocation or CLI that started it).

    Returns {pid, create_time}: both, so a reused pid is never mistaken for it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _children.append(child)
    return identity(child.pid)


def identity(pid: int) -> dict:
    """What identifies a running process across calls: pid plus start time."""
    return {"pid": pid, "create_time": psutil.Process(pid).create_time()}


def alive(proc: dict | None) -> bool:
    """Is the recorded process still running (the same process: pid and start time match)?"""
    for child in _children[:]:
        if child.poll() is not None:
            _children.remove(child)
    if not proc:
        return False
    try:
        p = psutil.Process(proc["pid"])
        return abs(p.create_time() - proc["create_time"]) < 1 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill(proc: dict | None, timeout_s: float = 15) -> None:
    """End the process and its whole session (gunicorn workers, step subprocesses) and wait for it."""
    if not alive(proc):
        return
    try:
        leader = psutil.Process(proc["pid"])
        # Wait for every member, not only the leader: a step's child outlives a leader that exits first.
        group = [leader, *leader.children(recursive=True)]
        os.killpg(proc["pid"], signal.SIGTERM)
        _, survivors = psutil.wait_procs(group, timeout=timeout_s)
        if survivors:
            os.killpg(proc["pid"], signal.SIGKILL)
            psutil.wait_procs(survivors, timeout=timeout_s)
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass
    alive(None)  # reap
