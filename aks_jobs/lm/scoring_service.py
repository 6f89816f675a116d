"""What /score answers, independent of the HTTP server: validate on the caller's thread, queue the rows for the
engine, follow their tokens into text, and reply as JSON or as Server-Sent Events.

Statuses: 200; 400 naming the bad field; 503 with Retry-After when the server is full or the request's deadline
passed; 500 only when the model itself failed.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel

from aks_jobs.lm.batcher import Engine, Job, JobFailed, Overloaded
from aks_jobs.lm.decoding import ContinuousDecoder
from aks_jobs.lm.generation import Completion, Prepared, RowText, completion, eos_ids, prepare
from aks_jobs.lm.kind_tokens import model_kinds
from aks_jobs.lm.kv_forward import CachedForward
from aks_jobs.lm.scoring_request import RequestError, is_info_request, parse_request
from aks_jobs.lm.serving_limits import ServingLimits
from aks_jobs.lm.serving_model import ServingModel
from pipeline_contracts.scoring import (
    ErrorBody,
    ModelInfo,
    ScoreResponse,
    ServedModel,
    StreamError,
    StreamPiece,
    Usage,
)

logger = logging.getLogger("azmlinfsrv.score")
_POLL_S = 0.25  # how often a waiting request looks whether its client is still there


class ClientGone(Exception):
    """The client closed its connection: nobody reads the answer any more."""


class DeadlineExceeded(Exception):
    pass


@dataclass
class Reply:
    status: int
    body: ScoreResponse | ModelInfo | ErrorBody | None = None
    headers: dict[str, str] = field(default_factory=dict)
    events: Iterator[str] | None = None  # Server-Sent Events, for "stream": true


class ScoringService:
    def __init__(
        self,
        served: ServingModel,
        forward: CachedForward,
        limits: ServingLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.served, self.limits, self.clock = served, limits, clock
        self.engine = Engine(ContinuousDecoder(forward, eos_ids(served.model)), max_requests=limits.max_requests)
        self.model = ServedModel(
            name=served.name, version=served.version, weights=served.weights, kinds=model_kinds(served.tokenizer)
        )

    def reply(self, raw: str | bytes, client_gone: Callable[[], bool] = lambda: False) -> Reply:
        deadline = self.clock() + self.limits.request_timeout_s
        if is_info_request(raw):
            return Reply(200, ModelInfo(model=self.model))
        try:
            request = parse_request(raw, self.limits, tuple(self.model.kinds))
            prepared = prepare(self.served.tokenizer, request, self.served.model.config.n_positions)
        except RequestError as err:
            logger.info("rejected request: %s", err)
            return Reply(400, err.body())
        try:
            job = self.engine.submit(prepared.rows)
        except Overloaded as err:
            return self._busy(f"the server is full ({err})")
        texts = [RowText(self.served.tokenizer, request.stop_sequences) for _ in prepared.rows]
        pieces = self._pieces(job, texts, deadline, client_gone)
        if request.stream:
            return Reply(
                200,
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                events=self._events(prepared, texts, pieces),
            )
        try:
            for _ in pieces:
                pass
        except DeadlineExceeded:
            return self._busy(f"the answer was not ready within {self.limits.request_timeout_s:g} s")
        except ClientGone:
            return Reply(499, ErrorBody(message="the client closed the connection"))
        except JobFailed as err:
            return Reply(500, ErrorBody(message=str(err)))
        return Reply(200, self._answer(prepared, completion(prepared, texts)))

    def _pieces(
        self, job: Job, texts: list[RowText], deadline: float, client_gone: Callable[[], bool]
    ) -> Iterator[tuple[int, str]]:
        """(row, new text) as tokens arrive, until every row is done; the job is dropped if this stops early."""
        checked = self.clock()
        try:
            while not all(text.done for text in texts):
                now = self.clock()
                if now >= deadline:
                    raise DeadlineExceeded
                if now - checked >= _POLL_S:
                    checked = now
                    if client_gone():
                        raise ClientGone
                try:
                    event = job.events.get(timeout=min(_POLL_S, deadline - now))
                except queue.Empty:
                    continue
                if isinstance(event, Exception):
                    raise event
                row, token, finished = event
                text = texts[row]
                if text.done:
                    continue
                piece = text.add(token)
                if text.done:  # a stop sequence: the engine may drop the row
                    job.stop_row(row)
                elif finished:
                    piece += text.finish()
                if piece:
                    yield row, piece
        finally:
            if not all(text.done for text in texts):
                job.cancel()

    def _events(self, prepared: Prepared, texts: list[RowText], pieces: Iterator[tuple[int, str]]) -> Iterator[str]:
        """`data: {"index", "prompt", "sequence", "text"}` per piece, then `event: done` with the whole answer
        (as the JSON reply), or `event: error` with a message."""
        per_prompt = prepared.request.num_return_sequences
        try:
            for row, piece in pieces:
                yield _event(StreamPiece(index=row, prompt=row // per_prompt, sequence=row % per_prompt, text=piece))
        except DeadlineExceeded:
            yield _event(
                StreamError(message=f"the answer was not ready within {self.limits.request_timeout_s:g} s", status=503),
                "error",
            )
            return
        except JobFailed as err:
            yield _event(StreamError(message=str(err), status=500), "error")
            return
        except ClientGone:
            return
        finally:
            pieces.close()  # a client that went away closes this generator: the job is dropped
        yield _event(self._answer(prepared, completion(prepared, texts)), "done")

    def _answer(self, prepared: Prepared, done: Completion) -> ScoreResponse:
        return ScoreResponse(
            generations=done.generations,
            model=self.model,
            usage=Usage(
                prompt_tokens=done.prompt_tokens,
                completion_tokens=done.completion_tokens,
                history_turns=done.history_turns,
            ),
            parameters=prepared.request.parameters(),
        )

    def _busy(self, why: str) -> Reply:
        seconds = self.limits.retry_after_s
        return Reply(503, ErrorBody(message=f"{why}; retry in {seconds} s"), {"Retry-After": str(seconds)})


def _event(data: BaseModel, name: str | None = None) -> str:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {data.model_dump_json()}\n\n"
