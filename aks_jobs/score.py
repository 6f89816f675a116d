"""AML scoring script (azmlinfsrv): init() loads the model from AZUREML_MODEL_DIR, run() generates text.

The server calls run() from many threads at once (gunicorn --threads, see function_app/backends/scoring_server.py);
each hands its request to one batcher that decodes the requests waiting at that moment in one batched loop.

POST /score {"prompt": "Once upon" | [..], "max_new_tokens": 50, "temperature": 0.7, "top_k": 50,
             "top_p": 0.95, "repetition_penalty": 1.0, "num_return_sequences": 1, "do_sample": true, "seed": 7,
             "format": "completion" | "instruction", "input": "..." (instruction only)}
  "format": "instruction" asks each prompt as an instruction in the template the model was trained on
  (lm/prompt_format.py) and answers with the response alone.
-> 200 {"generations": [[text, ...] per prompt], "model": {"name", "version"}, "usage": {...}, "parameters": {...}}
-> 400 {"message": "...", "field": "<the bad field>"} for any client mistake.
"""
from __future__ import annotations

import logging
import os
import sys
from functools import partial

# azmlinfsrv loads this file by path, so its folder is not importable unless we add it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from azureml_inference_server_http.api.aml_response import AMLResponse  # noqa: E402

from lm.batcher import Batcher  # noqa: E402
from lm.generation import (MAX_SEQUENCES, Completion, GenerationRequest, RequestError, generate,  # noqa: E402
                           parse_request)
from lm.serving_model import ServingModel, load_serving_model  # noqa: E402

# A child of the server's own logger, so lines reach its configured handlers (the root logger has none).
logger = logging.getLogger("azmlinfsrv.score")

_served: ServingModel | None = None
_batcher: Batcher[GenerationRequest, Completion] | None = None


def init() -> None:
    global _served, _batcher
    _served = load_serving_model()
    _batcher = Batcher(partial(generate, _served.model, _served.tokenizer),
                       rows_of=lambda request: request.rows, max_rows=MAX_SEQUENCES)
    logger.info("serving %s version %s from %s on %s", _served.name, _served.version, _served.folder,
                _served.model.device)


def run(raw: str) -> AMLResponse:
    """`raw` is the request body as text: azmlinfsrv decodes it as UTF-8 and passes it unparsed."""
    try:
        request = parse_request(raw)
        completion = _batcher.submit(request)
    except RequestError as err:
        logger.info("rejected request: %s", err)
        return AMLResponse(err.to_json(), 400, json_str=True)
    # Anything else propagates (to every request of a failed batch): azmlinfsrv logs the traceback and answers
    # 500; the batcher and the worker keep serving.
    return AMLResponse({
        "generations": completion.generations,
        "model": {"name": _served.name, "version": _served.version},
        "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens},
        "parameters": request.parameters(),
    }, 200, json_str=True)
