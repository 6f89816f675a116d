"""AML scoring script (azmlinfsrv): init() loads the model from AZUREML_MODEL_DIR, run() answers one request.

The server calls run() from many threads at once (gunicorn --threads, see aks_jobs/lm/scoring_server_settings.py);
each validates its own request, then follows its tokens while one engine thread decodes every running request
together (continuous batching, lm.batcher). What each request gets is decided in lm.scoring_service.

POST /score {"prompt": "Once upon" | [..], "max_new_tokens": 50, "temperature": 0.7, "top_k": 50,
             "top_p": 0.95, "repetition_penalty": 1.0, "num_return_sequences": 1, "do_sample": true, "seed": 7,
             "stop": ["\\n"], "history": ["earlier turn", ...], "stream": false,
             "format": "completion" | "instruction", "input": "..." (instruction only)}
  "format": "instruction" asks each prompt as an instruction in the template the model was trained on
  (lm/prompt_format.py) and answers with the response alone.
-> 200 {"generations": [[text, ...] per prompt], "model": {"name", "version", "weights"}, "usage": {...},
        "parameters": {...}}
-> 200 text/event-stream with "stream": true: `data: {"index", "prompt", "sequence", "text"}` per piece of text,
   then `event: done` with the JSON answer above
-> 400 {"message": "...", "field": "<the bad field>"} for any client mistake
-> 503 with Retry-After when the server is full or the answer missed its deadline.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

from aks_jobs.capacity import cgroup_cpu_quota
from aks_jobs.lm.scoring_server_settings import openmp_environment

# OpenMP reads its settings when torch loads, so they are set before torch is imported (threads within the
# pod's CPU quota, a bounded spin while waiting); a deployment's own OMP_* / GOMP_* settings win.
os.environ.update(openmp_environment(os.environ, cgroup_cpu_quota(), len(os.sched_getaffinity(0))))

import flask  # noqa: E402
from azureml_inference_server_http.api.aml_response import AMLResponse  # noqa: E402

from aks_jobs.lm.scoring_service import ScoringService  # noqa: E402
from aks_jobs.lm.serving_limits import ServingLimits  # noqa: E402
from aks_jobs.lm.serving_model import cached_forward, load_serving_model  # noqa: E402

# A child of the server's own logger, so lines reach its configured handlers (the root logger has none).
logger = logging.getLogger("azmlinfsrv.score")

_service: ScoringService | None = None


def init() -> None:
    global _service
    served = load_serving_model()
    limits = ServingLimits.for_device(served.model.device.type)
    _service = ScoringService(
        served, cached_forward(served, limits.max_rows, cuda_graphs=limits.use_cuda_graphs), limits
    )
    logger.info(
        "serving %s version %s from %s on %s, %s weights, with %s",
        served.name,
        served.version,
        served.folder,
        served.model.device,
        served.weights,
        limits,
    )


def run(raw: str) -> flask.Response:
    """`raw` is the request body as text: azmlinfsrv decodes it as UTF-8 and passes it unparsed."""
    reply = _service.reply(raw, _client_gone_check())
    if reply.events is not None:
        return flask.Response(reply.events, status=reply.status, headers=reply.headers, mimetype="text/event-stream")
    body = reply.body.model_dump(mode="json", exclude_none=True) if reply.body is not None else None
    return AMLResponse(body, reply.status, reply.headers, json_str=True)


def _client_gone_check() -> Callable[[], bool]:
    """Whether the client has closed its connection: gunicorn hands the socket to the app in the WSGI environ."""
    sock = flask.request.environ.get("gunicorn.socket") if flask.has_request_context() else None
    if sock is None:
        return lambda: False

    def gone() -> bool:
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""  # b"": the peer closed
        except BlockingIOError:
            return False  # open, nothing sent: the client is waiting
        except OSError:
            return True

    return gone
