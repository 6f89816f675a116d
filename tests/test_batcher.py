"""Concurrent requests share decode batches (in-process and through the real azmlinfsrv), and each still gets
exactly its own answer: its settings, its count of generations, its error."""
from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import pytest

from lm.batcher import Batcher
from lm.generation import MAX_SEQUENCES, Completion, GenerationRequest, RequestError, generate, parse_request
from lm.serving_model import ServingModel, load_serving_model
from scoring_server import running_scoring_server
from tiny_model import make_tiny_model

PROMPTS = ["Diogo is", "The quick brown fox jumps over the"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "gpt2-pdf-model")


@pytest.fixture(scope="module")
def served(tiny_model_dir) -> ServingModel:
    return load_serving_model({"AZUREML_MODEL_DIR": str(tiny_model_dir)})


def request(prompt: str | list[str], **settings) -> GenerationRequest:
    return parse_request(json.dumps({"prompt": prompt, "max_new_tokens": 8, **settings}))


class HeldBatches:
    """generate() on the real model, each batch recorded; the first waits until the test releases it, so the
    test decides what queues up meanwhile (no reliance on timing)."""

    def __init__(self, run: Callable[[list[GenerationRequest]], list]) -> None:
        self.run = run
        self.batches: list[list[GenerationRequest]] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, requests: list[GenerationRequest]) -> list:
        self.batches.append(requests)
        self.started.set()
        assert self.release.wait(timeout=60), "the test never released the first batch"
        return self.run(requests)


def queue_behind_a_held_batch(batcher: Batcher, held: HeldBatches, requests: list[GenerationRequest],
                              pool: ThreadPoolExecutor) -> list[Future]:
    """Submit `requests` from threads while a first request's batch is held, then let everything run."""
    first = pool.submit(batcher.submit, request("x"))
    assert held.started.wait(timeout=60)
    futures = [pool.submit(batcher.submit, r) for r in requests]
    deadline = time.monotonic() + 60
    while batcher.waiting < len(requests):  # every thread has queued its request
        assert time.monotonic() < deadline, f"only {batcher.waiting} of {len(requests)} requests queued"
        time.sleep(0.01)
    held.release.set()
    assert isinstance(first.result(timeout=60), Completion)
    return futures


def test_concurrent_requests_share_one_batch_and_get_their_own_answers(served):
    held = HeldBatches(partial(generate, served.model, served.tokenizer))
    batcher = Batcher(held, rows_of=lambda r: r.rows, max_rows=MAX_SEQUENCES)
    requests = [request(PROMPTS, seed=1, num_return_sequences=3),
                request("Diogo is", do_sample=False, max_new_tokens=12, repetition_penalty=1.3),
                request(PROMPTS[1], seed=2, top_k=0, top_p=0.8, temperature=1.4, max_new_tokens=20),
                request(PROMPTS * 4, seed=3, num_return_sequences=2, top_k=1)]
    with ThreadPoolExecutor(len(requests) + 1) as pool:
        answers = [future.result(timeout=120) for future in queue_behind_a_held_batch(batcher, held, requests, pool)]

    assert batcher.batches == 2 and [len(batch) for batch in held.batches] == [1, len(requests)]
    for req, answer in zip(requests, answers):
        assert [len(texts) for texts in answer.generations] == [req.num_return_sequences] * len(req.prompts)
        assert answer.generations == generate(served.model, served.tokenizer, [req])[0].generations  # as alone


def test_an_error_reaches_only_its_request(served):
    held = HeldBatches(partial(generate, served.model, served.tokenizer))
    batcher = Batcher(held, rows_of=lambda r: r.rows, max_rows=MAX_SEQUENCES)
    requests = [request("Diogo is", seed=5), request(["ok", "fox " * 200]), request(PROMPTS, do_sample=False)]
    with ThreadPoolExecutor(len(requests) + 1) as pool:
        good, too_long, also_good = queue_behind_a_held_batch(batcher, held, requests, pool)
        assert isinstance(good.result(timeout=120), Completion)
        assert isinstance(too_long.exception(timeout=120), RequestError)
        assert too_long.exception().field == "prompt[1]"
        assert len(also_good.result(timeout=120).generations) == 2
    assert batcher.batches == 2


def test_an_unexpected_failure_fails_its_batch_and_the_batcher_serves_on(served):
    def fails_on_boom(requests: list[GenerationRequest]) -> list:
        if any("boom" in r.prompts for r in requests):
            raise RuntimeError("decoding broke")
        return generate(served.model, served.tokenizer, requests)

    held = HeldBatches(fails_on_boom)
    batcher = Batcher(held, rows_of=lambda r: r.rows, max_rows=MAX_SEQUENCES)
    with ThreadPoolExecutor(3) as pool:
        futures = queue_behind_a_held_batch(batcher, held, [request("boom"), request("Diogo is")], pool)
        for future in futures:
            assert isinstance(future.exception(timeout=120), RuntimeError)
    assert isinstance(batcher.submit(request("Diogo is")), Completion)
    assert batcher.batches == 3


def test_batches_hold_at_most_max_rows_in_arrival_order(served):
    held = HeldBatches(partial(generate, served.model, served.tokenizer))
    batcher = Batcher(held, rows_of=lambda r: r.rows, max_rows=MAX_SEQUENCES)
    forty, thirty, twenty = (request(["fox"] * prompts, num_return_sequences=sequences, max_new_tokens=2)
                             for prompts, sequences in ((20, 2), (10, 3), (20, 1)))
    with ThreadPoolExecutor(4) as pool:
        futures = queue_behind_a_held_batch(batcher, held, [forty, thirty, twenty], pool)
        answers = [future.result(timeout=120).generations for future in futures]
    assert [sum(len(texts) for texts in generations) for generations in answers] == [40, 30, 20]
    # 40 + 30 rows exceed 64: the thirty waits for the next batch, and the twenty goes with it, not before it.
    assert [[r.rows for r in batch] for batch in held.batches] == [[1], [40], [30, 20]]


@pytest.mark.slow
def test_real_azmlinfsrv_answers_concurrent_requests_each_with_its_settings(tiny_model_dir, tmp_path):
    model_root = tmp_path / "azureml-models" / "gpt2-pdf" / "2"
    shutil.copytree(tiny_model_dir, model_root / tiny_model_dir.name)
    bodies = [{"prompt": PROMPTS, "seed": 11, "num_return_sequences": 3, "max_new_tokens": 6},
              {"prompt": "Diogo is", "do_sample": False, "max_new_tokens": 15, "repetition_penalty": 1.4},
              {"prompt": PROMPTS[1], "seed": 12, "temperature": 1.5, "top_k": 0, "top_p": 0.8, "max_new_tokens": 9},
              {"prompt": ["a", "b", "c"], "seed": 13, "num_return_sequences": 2, "top_k": 3},
              {"prompt": "fox " * 200},  # too long: 400 for this one only
              *({"prompt": f"Request {i} says", "seed": 100 + i, "max_new_tokens": 4 + i} for i in range(11))]
    with running_scoring_server(model_root) as base_url, httpx.Client(base_url=base_url, timeout=120) as http:
        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(lambda body: http.post("/score", json=body), bodies))
        for body, answer in zip(bodies, answers):
            if body["prompt"] == "fox " * 200:
                assert answer.status_code == 400 and answer.json()["field"] == "prompt"
                continue
            assert answer.status_code == 200, answer.text
            parameters = answer.json()["parameters"]
            assert {key: parameters[key] for key in body if key != "prompt"} == {k: v for k, v in body.items()
                                                                               if k != "prompt"}
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            expected = [parameters["num_return_sequences"]] * len(prompts)
            assert [len(texts) for texts in answer.json()["generations"]] == expected
        # Sent again one at a time, seeded and greedy requests give the same text as they did in a crowd.
        for body, answer in list(zip(bodies, answers))[:4]:
            assert http.post("/score", json=body).json()["generations"] == answer.json()["generations"]
