"""Run extractions in worker processes that can be stopped and may crash: pypdf has no timeout of its
own, and pdfium is C++ code that can abort or segfault on a hostile file.

Each worker is a forked process whose address space (RLIMIT_AS) may grow by at most --memory-mb
beyond what it inherited: a parent with large libraries mapped (torch, a test session) must not
leave its workers without room, so the limit is relative. The parent gives each
worker one document at a time and enforces a wall-clock deadline per document: a worker past its
deadline is killed and replaced, one that runs out of memory exits and is replaced, and the other
documents carry on. Workers are reused between documents because forking one per document cost
4-15 ms here (depending on load), 15-50% of the ~25 ms pypdf needs for a 10-page document.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path

import psutil

from aks_jobs.pdf_text.document import Extraction, process_document

# Exit status of a worker that hit its memory limit (MemoryError), chosen to differ from Python's own.
MEMORY_EXIT_CODE = 86
# How long an idle worker gets to exit after being told to stop before it is killed.
STOP_GRACE_S = 2.0


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_mb: int

    @property
    def key(self) -> str:
        """Names these limits in a cache entry's file name."""
        return f"t{self.timeout_s:g}-m{self.memory_mb}"


@dataclass(frozen=True)
class Task:
    key: str  # the caller's name for the document; echoed back with its result
    path: Path
    pdfium: bool = True  # False: pypdf only, the retry after pdfium's worker died on this document


@dataclass(frozen=True)
class Outcome:
    task: Task
    extraction: Extraction
    seconds: float
    died: bool = False  # the worker crashed or was killed while on this document (not a timeout)


def _limit_address_space(memory_mb: int) -> None:
    wanted = psutil.Process().memory_info().vms + memory_mb * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))


def _serve(conn: Connection, memory_mb: int, inherited: list[Connection]) -> None:
    """Worker main loop: receive a path, send back its Extraction; None means stop."""
    # Forking copied the parent's ends of this and earlier workers' pipes; holding them would keep
    # those pipes open after the parent dies, and workers waiting on them would never see EOF.
    for connection in inherited:
        connection.close()
    _limit_address_space(memory_mb)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops workers
    try:
        while (task := conn.recv()) is not None:
            path, pdfium = task
            conn.send(process_document(Path(path), pdfium))
    except MemoryError:
        # The heap may be fragmented or nearly full: report by exit status, which needs no memory.
        os._exit(MEMORY_EXIT_CODE)
    except (EOFError, BrokenPipeError):
        pass  # the parent is gone; nothing left to do


class _Worker:
    """One worker process and the document it is busy with (None when idle)."""

    def __init__(self, context: multiprocessing.context.BaseContext, limits: Limits, others: list[_Worker]) -> None:
        self.limits = limits
        self.conn, child_conn = context.Pipe()
        inherited = [self.conn] + [other.conn for other in others]
        self.process: BaseProcess = context.Process(
            target=_serve, args=(child_conn, limits.memory_mb, inherited), daemon=True
        )
        self.process.start()
        child_conn.close()
        self.task: Task | None = None
        self.usable = True
        self.started = self.deadline = 0.0

    def assign(self, task: Task) -> None:
        self.task, self.started = task, time.monotonic()
        self.deadline = self.started + self.limits.timeout_s
        self.conn.send((str(task.path), task.pdfium))

    def poll(self) -> Outcome | None:
        """The current task's outcome if there is one now. A worker that failed is no longer usable."""
        assert self.task is not None
        now = time.monotonic()
        extraction: Extraction | None = None
        died = False
        if self.conn.poll():
            try:
                extraction = self.conn.recv()
            except EOFError:  # it died before sending anything
                self.process.join()
        if extraction is None and not self.process.is_alive():
            self.process.join()
            self.conn.close()
            # Over the memory limit is an outcome of these limits (cached per limits); a kill by the system
            # depends on what else ran, so it is tried again next run.
            memory = self.process.exitcode == MEMORY_EXIT_CODE
            message = _death_message(self.process.exitcode, self.limits, self.task.pdfium)
            extraction = Extraction.failed(message, cacheable=memory)
            extraction.limited = memory
            self.usable = False
            died = True
        elif extraction is None and now >= self.deadline:
            self.kill()
            extraction = Extraction.failed(_timeout_message(self.limits), cacheable=True)
            extraction.limited = True  # cached per (sha256, limits): the same limits would only time out again
            self.usable = False
        if extraction is None:
            return None
        outcome = Outcome(self.task, extraction, now - self.started, died)
        self.task = None
        return outcome

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(STOP_GRACE_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _death_message(exitcode: int | None, limits: Limits, pdfium: bool) -> str:
    if exitcode == MEMORY_EXIT_CODE:
        return (
            f"stopped at the memory limit of {limits.memory_mb} MB: extracting it needed more (a very large "
            "or malformed PDF); raise --memory-mb or split the PDF, then run again."
        )
    if exitcode == -signal.SIGKILL:
        return (
            "the extraction process was killed by the system, most likely for using too much memory "
            "(the machine or container ran out); lower --workers or --memory-mb, or split the PDF, then run again."
        )
    cause = f"signal {signal.Signals(-exitcode).name}" if exitcode and exitcode < 0 else f"exit status {exitcode}"
    if not pdfium:
        # pypdf is pure Python: what kills it is most likely the interpreter aborting when memory runs out
        # while it raises MemoryError.
        return (
            f"the extraction process crashed ({cause}) while pypdf read it, most likely at the memory limit of "
            f"{limits.memory_mb} MB; raise --memory-mb or split the PDF, then run again. The other documents "
            "are not affected."
        )
    return (
        f"the extraction process crashed ({cause}): the PDF engine (pdfium or pypdf) failed on this file, a "
        "hostile or broken PDF; open it in a PDF viewer, save or export it as a new PDF and upload that. The "
        "other documents are not affected."
    )


def _timeout_message(limits: Limits) -> str:
    return (
        f"stopped after the time limit of {limits.timeout_s:g} s: extracting it took too long (a very large "
        "or malformed PDF); raise --timeout-s or split the PDF, then run again."
    )


# Deaths that are the engine's own failure (retried with pypdf); SIGKILL and SIGTERM come from outside.
_CRASH_SIGNALS = {signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}


def _is_crash(exitcode: int | None) -> bool:
    return exitcode == MEMORY_EXIT_CODE or (exitcode is not None and -exitcode in _CRASH_SIGNALS)


def _after_crash(crash: Outcome, retry: Outcome) -> Outcome:
    """The document's outcome once pypdf retried it after pdfium's worker died."""
    if crash.extraction.limited and retry.extraction.status == "error":
        # The memory limit is the reason to act on, even where pypdf then died another way (the
        # interpreter aborts when it runs out of memory while raising MemoryError).
        crash.extraction.note(f"pypdf failed on it too: {retry.extraction.messages[0]}")
        return replace(crash, seconds=crash.seconds + retry.seconds)
    if retry.extraction.status == "error":  # pypdf's reason (e.g. the memory limit) is the one to act on
        retry.extraction.note(f"pdfium failed on it first: {crash.extraction.messages[0]}")
    else:
        retry.extraction.warn(f"read with pypdf: pdfium failed on it first ({crash.extraction.messages[0]})")
        # Whether pdfium crashes may depend on the limits and the machine: try it again next run.
        retry.extraction.cacheable = False
    return replace(retry, seconds=crash.seconds + retry.seconds)


def extract_isolated(tasks: list[Task], limits: Limits, workers: int) -> Iterator[Outcome]:
    """Yield one Outcome per task, in completion order, running at most `workers` at once."""
    context = multiprocessing.get_context("fork")  # workers inherit the imported pypdf: no start-up cost
    pending = deque(tasks)
    crashes: dict[str, Outcome] = {}  # task key -> pdfium's worker dying on it
    pool: list[_Worker] = []
    try:
        while pending or any(worker.task for worker in pool):
            for worker in pool:
                if worker.task is None and pending:
                    worker.assign(pending.popleft())
            while pending and len(pool) < workers:
                pool.append(_Worker(context, limits, pool))
                pool[-1].assign(pending.popleft())
            busy = [worker for worker in pool if worker.task]
            wait(
                [worker.conn for worker in busy] + [worker.process.sentinel for worker in busy],
                timeout=max(0.0, min(worker.deadline for worker in busy) - time.monotonic()),
            )
            for worker in busy:
                outcome = worker.poll()
                if outcome is None:
                    continue
                if not worker.usable:  # replaced on demand by the loop above
                    pool.remove(worker)
                if outcome.died and outcome.task.pdfium and _is_crash(worker.process.exitcode):
                    # pdfium is C++: an abort or segfault (or its reaction to the memory limit) kills the
                    # worker. pypdf may still read the document; if it cannot, the crash is what is reported.
                    crashes[outcome.task.key] = outcome
                    pending.appendleft(replace(outcome.task, pdfium=False))
                    continue
                if (crash := crashes.pop(outcome.task.key, None)) is not None:
                    outcome = _after_crash(crash, outcome)
                yield outcome
    finally:
        for worker in pool:  # only usable workers remain in the pool
            if worker.task is None:
                worker.stop()
            else:  # the caller stopped early (error or Ctrl-C): abandon its document
                worker.kill()
