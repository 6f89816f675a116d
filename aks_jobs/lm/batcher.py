"""Batch concurrent scoring requests: one thread owns the model and decodes whatever has queued up together.

The server's threads each call submit() and wait. A decode step for 32 rows costs little more than for one
on a GPU (and far less than 32 steps on a CPU), so requests that arrive while a batch runs are answered
together by the next one instead of queueing one by one.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Request = TypeVar("Request")
Answer = TypeVar("Answer")

logger = logging.getLogger(__name__)


@dataclass
class _Pending(Generic[Request, Answer]):
    request: Request
    rows: int
    answer: Future[Answer] = field(default_factory=Future)


class Batcher(Generic[Request, Answer]):
    """Run `run_batch` on batches of at most `max_rows` rows, in arrival order, on one background thread.

    `run_batch(requests)` returns one answer per request, in order; an answer that is an exception is raised
    to that request's caller only. An exception from `run_batch` itself fails every request of its batch,
    and the thread goes on with the next batch.
    """

    def __init__(self, run_batch: Callable[[list[Request]], Sequence[Answer | Exception]],
                 rows_of: Callable[[Request], int], max_rows: int) -> None:
        self._run_batch = run_batch
        self._rows_of = rows_of
        self._max_rows = max_rows
        self._queue: deque[_Pending[Request, Answer]] = deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self.batches = 0  # batches run so far, e.g. to see that concurrent requests shared one

    @property
    def waiting(self) -> int:
        """Requests queued for a coming batch."""
        with self._ready:
            return len(self._queue)

    def submit(self, request: Request) -> Answer:
        """Queue `request`, wait for its batch, and return its answer (or raise its exception)."""
        rows = self._rows_of(request)
        if rows > self._max_rows:
            raise ValueError(f"a request of {rows} rows never fits a batch of at most {self._max_rows}")
        pending: _Pending[Request, Answer] = _Pending(request, rows)
        with self._ready:
            # Started on first use, so the thread lives in the process that serves (gunicorn may fork after
            # init() when it preloads the app).
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="generation-batcher", daemon=True)
                self._thread.start()
            self._queue.append(pending)
            self._ready.notify()
        return pending.answer.result()

    def _next_batch(self) -> list[_Pending[Request, Answer]]:
        """Wait for a request, then take every queued one that fits, oldest first."""
        with self._ready:
            self._ready.wait_for(lambda: self._queue)
            batch, rows = [], 0
            while self._queue and rows + self._queue[0].rows <= self._max_rows:
                rows += self._queue[0].rows
                batch.append(self._queue.popleft())
            return batch

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            self.batches += 1
            try:
                answers = list(self._run_batch([pending.request for pending in batch]))
                if len(answers) != len(batch):
                    raise RuntimeError(f"{len(answers)} answers for a batch of {len(batch)} requests")
            except Exception as error:  # noqa: BLE001 - any failure answers its batch; the thread must live on
                logger.exception("batch of %d requests failed", len(batch))
                for pending in batch:
                    pending.answer.set_exception(error)
                continue
            for pending, answer in zip(batch, answers):
                if isinstance(answer, Exception):
                    pending.answer.set_exception(answer)
                else:
                    pending.answer.set_result(answer)
