"""Continuous batching: one thread owns the model and steps every running sequence; requests join at the next
step and leave when done.

The server's threads each submit() a request's rows and read its tokens as they come (Job.events). A request
waits in a bounded queue only until enough cache slots are free; beyond `max_requests` (running plus queued)
submit() refuses at once with Overloaded, so a server thread is never parked behind an endless queue. A job
whose client has gone, whose deadline passed, or whose rows hit a stop sequence is dropped at the next step.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from aks_jobs.lm.decoding import ContinuousDecoder, Row

logger = logging.getLogger(__name__)


class Overloaded(Exception):
    """Too many requests running or queued: the server answers 503 with Retry-After."""


class JobFailed(RuntimeError):
    """The engine could not run this job (the model failed mid-step); the request answers 500."""


@dataclass(eq=False)
class Job:
    """One request's rows inside the engine. The request's thread reads `events`; the engine writes them."""

    rows: Sequence[Row]
    # (row index, token, finished) per new token; a JobFailed if the engine could not go on.
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: bool = False
    stopped: set[int] = field(default_factory=set)  # rows the request no longer needs (stop sequence)

    def cancel(self) -> None:
        """Drop this job at the next step: its client went away or its deadline passed."""
        self.cancelled = True

    def stop_row(self, row: int) -> None:
        self.stopped.add(row)

    def tokens(self, timeout_s: float) -> Iterator[tuple[int, int, bool]]:
        """Events until every row finished; raises queue.Empty if none comes within `timeout_s`."""
        open_rows = set(range(len(self.rows))) - self.stopped
        while open_rows - self.stopped:
            event = self.events.get(timeout=timeout_s)
            if isinstance(event, Exception):
                raise event
            row, _, finished = event
            if finished:
                open_rows.discard(row)
            yield event


class Engine:
    """Runs a ContinuousDecoder on one background thread for jobs submitted from any thread."""

    def __init__(self, decoder: ContinuousDecoder, *, max_requests: int) -> None:
        self._decoder = decoder
        self._max_requests = max_requests
        self._waiting: deque[Job] = deque()
        self._running: dict[int, tuple[Job, int]] = {}  # slot -> (job, row index)
        self._jobs_running: set[Job] = set()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self.steps = 0  # decode steps so far
        self.max_batch = 0  # most rows ever decoded in one step, e.g. to see requests shared steps

    @property
    def in_flight(self) -> int:
        with self._ready:
            return len(self._waiting) + len(self._jobs_running)

    @property
    def waiting(self) -> int:
        with self._ready:
            return len(self._waiting)

    def submit(self, rows: Sequence[Row]) -> Job:
        if len(rows) > self._decoder.forward.slots:
            raise ValueError(f"a request of {len(rows)} rows never fits {self._decoder.forward.slots} cache slots")
        job = Job(rows)
        with self._ready:
            if len(self._waiting) + len(self._jobs_running) >= self._max_requests:
                raise Overloaded(f"{self._max_requests} requests are running or queued")
            # Started on first use, so the thread lives in the process that serves (gunicorn may fork after
            # init() when it preloads the app).
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="generation-engine", daemon=True)
                self._thread.start()
            self._waiting.append(job)
            self._ready.notify()
        return job

    def _serve(self) -> None:
        while True:
            try:
                self._admit()
                self._drop_unwanted()
                self._step()
            except Exception:  # noqa: BLE001 - the engine thread must live on whatever happens
                logger.exception("generation engine iteration failed")

    def _admit(self) -> None:
        """Wait for work; prefill the queued jobs that fit the free slots, oldest first (no overtaking)."""
        with self._ready:
            self._ready.wait_for(lambda: self._waiting or self._running)
            if any(job.cancelled for job in self._waiting):  # gone before they started: they hold no place
                self._waiting = deque(job for job in self._waiting if not job.cancelled)
            admitted = []
            free = self._decoder.free_slots
            while self._waiting and len(self._waiting[0].rows) <= free:
                job = self._waiting.popleft()
                admitted.append(job)
                free -= len(job.rows)
                self._jobs_running.add(job)
        if not admitted:
            return
        try:
            self._start(admitted)  # one prefill for them all
        except Exception:  # noqa: BLE001 - then each alone, so a job that cannot start fails alone
            for job in admitted:
                try:
                    self._start([job])
                except Exception as err:  # noqa: BLE001
                    logger.exception("prefill failed")
                    self._finish(job, JobFailed(f"could not start generating: {err}"))

    def _start(self, jobs: list[Job]) -> None:
        slots = iter(self._decoder.add([row for job in jobs for row in job.rows]))
        for job in jobs:
            for row in range(len(job.rows)):
                self._running[next(slots)] = (job, row)

    def _drop_unwanted(self) -> None:
        for slot, (job, row) in list(self._running.items()):
            if job.cancelled or row in job.stopped:
                self._release(slot)

    def _step(self) -> None:
        if not self._running:
            return
        self.max_batch = max(self.max_batch, len(self._running))
        try:
            chosen = self._decoder.step()
        except Exception as err:  # noqa: BLE001 - the model failed: every running job fails, the engine goes on
            logger.exception("decode step failed")
            for job in {job for job, _ in self._running.values()}:
                self._finish(job, JobFailed(f"generation failed: {err}"))
            return
        self.steps += 1
        for slot, token, finished in chosen:
            job, row = self._running[slot]
            job.events.put((row, token, finished))
            if finished:
                self._release(slot, removed=True)

    def _release(self, slot: int, *, removed: bool = False) -> None:
        job, _ = self._running.pop(slot)
        if not removed:
            self._decoder.remove(slot)
        if not any(other is job for other, _ in self._running.values()):
            with self._ready:
                self._jobs_running.discard(job)

    def _finish(self, job: Job, error: Exception) -> None:
        for slot in [slot for slot, (owner, _) in self._running.items() if owner is job]:
            self._release(slot)
        with self._ready:
            self._jobs_running.discard(job)
        job.events.put(error)
