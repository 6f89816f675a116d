"""Continuous batching: requests join the running batch at the next step and leave when done, each still gets
exactly its own answer (settings, seeds, errors), and the engine is bounded (in-process and through the real
azmlinfsrv)."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gated_forward import GatedForward
from tiny_model import make_tiny_model

from aks_jobs.lm.batcher import Engine, Job, JobFailed, Overloaded
from aks_jobs.lm.decoding import ContinuousDecoder
from aks_jobs.lm.generation import RowText, completion, eos_ids, generate, prepare
from aks_jobs.lm.kv_forward import Gpt2CachedForward
from aks_jobs.lm.scoring_request import parse_request
from aks_jobs.lm.serving_model import ServingModel, load_serving_model
from local_stack.scoring_server import running_scoring_server

PROMPTS = ["Diogo is", "The quick brown fox jumps over the"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "gpt2-pdf-model")


@pytest.fixture(scope="module")
def served(tiny_model_dir) -> ServingModel:
    return load_serving_model({"AZUREML_MODEL_DIR": str(tiny_model_dir)})


def request(prompt: str | list[str], **settings):
    return parse_request(json.dumps({"prompt": prompt, "max_new_tokens": 8, **settings}))


def engine_for(served: ServingModel, slots: int = 8, max_requests: int = 8, **gate) -> tuple[Engine, GatedForward]:
    gated = GatedForward(Gpt2CachedForward(served.model, slots), **gate)
    return Engine(ContinuousDecoder(gated, eos_ids(served.model)), max_requests=max_requests), gated


def texts_of(served: ServingModel, job: Job, prepared) -> list[list[str]]:
    """Read a job's tokens to the end, as a request's thread does."""
    rows = [RowText(served.tokenizer, prepared.request.stop) for _ in prepared.rows]
    for row, token, finished in job.tokens(timeout_s=60):
        rows[row].add(token)
        if finished:
            rows[row].finish()
    return completion(prepared, rows).generations


def test_a_request_joins_the_running_batch_and_leaves_when_done(served):
    engine, gated = engine_for(served)
    long = prepare(served.tokenizer, request(PROMPTS[0], do_sample=False, max_new_tokens=30), 128)
    short = prepare(served.tokenizer, request(PROMPTS, seed=4, num_return_sequences=2, max_new_tokens=5), 128)
    long_job = engine.submit(long.rows)
    gated.go.release(3)
    gated.wait_for_steps(4)  # the 4th step waits, its rows fixed
    short_job = engine.submit(short.rows)  # arrives while the long one runs
    gated.go.release(1000)
    for job, prepared in ((short_job, short), (long_job, long)):
        alone = generate(served.model, served.tokenizer, [prepared.request])[0].generations
        assert texts_of(served, job, prepared) == alone
    # Alone, then with the four short rows for their 4 fed steps (the 5th token needs no forward), then alone
    # again: the short request neither waited for the long one nor kept it waiting.
    assert gated.step_rows == [1] * 4 + [5] * 4 + [1] * (29 - 8)


def test_a_seeded_request_gives_the_same_text_alone_or_joining_any_batch(served):
    seeded = request(
        PROMPTS,
        seed=7,
        num_return_sequences=3,
        max_new_tokens=20,
        temperature=1.2,
        top_k=0,
        top_p=0.9,
        repetition_penalty=1.2,
    )
    alone = generate(served.model, served.tokenizer, [seeded])[0].generations
    engine, gated = engine_for(served, slots=12)
    neighbour = prepare(served.tokenizer, request("The quick brown fox " * 3, seed=1, max_new_tokens=40), 128)
    neighbour_job = engine.submit(neighbour.rows)
    gated.go.release(5)
    gated.wait_for_steps(6)
    prepared = prepare(served.tokenizer, seeded, 128)
    job = engine.submit(prepared.rows)
    gated.go.release(1000)
    assert texts_of(served, job, prepared) == alone
    texts_of(served, neighbour_job, neighbour)


def test_queued_requests_wait_for_free_slots_in_arrival_order_and_the_queue_is_bounded(served):
    engine, gated = engine_for(served, slots=4, max_requests=3)
    first = prepare(served.tokenizer, request(PROMPTS, do_sample=False, max_new_tokens=10), 128)  # 2 slots
    three = prepare(served.tokenizer, request(PROMPTS[0], seed=1, num_return_sequences=3), 128)  # 3 slots
    one = prepare(served.tokenizer, request("x", do_sample=False, max_new_tokens=3), 128)  # would fit now
    jobs = [engine.submit(first.rows), engine.submit(three.rows), engine.submit(one.rows)]
    with pytest.raises(Overloaded):
        engine.submit(one.rows)
    gated.go.release(1000)
    for job, prepared in zip(jobs, (first, three, one)):
        texts_of(served, job, prepared)
    # The 3-slot request waits for the first to finish; the 1-slot one does not overtake it.
    assert gated.step_rows[:9] == [2] * 9 and max(gated.step_rows[9:]) == 4
    assert engine.in_flight == 0
    engine.submit(one.rows)  # room again


def test_a_cancelled_request_is_dropped_at_the_next_step(served):
    engine, gated = engine_for(served)
    gone = prepare(served.tokenizer, request(PROMPTS[0], do_sample=False, max_new_tokens=100), 128)
    staying = prepare(served.tokenizer, request(PROMPTS[1], do_sample=False, max_new_tokens=12), 128)
    gone_job = engine.submit(gone.rows)
    gated.go.release(2)
    gated.wait_for_steps(3)
    gone_job.cancel()
    staying_job = engine.submit(staying.rows)
    gated.go.release(1000)
    assert (
        texts_of(served, staying_job, staying)
        == generate(served.model, served.tokenizer, [staying.request])[0].generations
    )
    assert len(gated.step_rows) <= 3 + 12 and engine.in_flight == 0  # the cancelled one ran no further


def test_a_request_that_fails_to_start_fails_alone(served):
    bad = prepare(served.tokenizer, request("boom", do_sample=False), 128)
    engine, gated = engine_for(served, fail_prefill=bad.rows[0].prompt)
    good = prepare(served.tokenizer, request(PROMPTS, seed=3), 128)
    bad_job, good_job = engine.submit(bad.rows), engine.submit(good.rows)
    gated.go.release(1000)
    with pytest.raises(JobFailed, match="breaks the model"):
        list(bad_job.tokens(timeout_s=60))
    assert texts_of(served, good_job, good) == generate(served.model, served.tokenizer, [good.request])[0].generations


def queued_behind_a_step(served, engine, gated, prompts: list[str]):
    """Start one job, hold its first step, queue a job per prompt meanwhile: they are admitted together."""
    running = prepare(served.tokenizer, request(PROMPTS, seed=3), 128)
    first = engine.submit(running.rows)
    gated.wait_for_steps(1)
    queued = [prepare(served.tokenizer, request(prompt, do_sample=False), 128) for prompt in prompts]
    jobs = [engine.submit(prepared.rows) for prepared in queued]
    gated.go.release(1000)
    assert (
        texts_of(served, first, running) == generate(served.model, served.tokenizer, [running.request])[0].generations
    )
    return queued, jobs


def test_requests_queued_together_are_prefilled_in_one_forward(served):
    engine, gated = engine_for(served)
    queued, jobs = queued_behind_a_step(served, engine, gated, ["Mary had a little", "Once", "It was a dark and"])
    for prepared, job in zip(queued, jobs, strict=True):  # prompts of three lengths, padded into one forward
        assert (
            texts_of(served, job, prepared)
            == generate(served.model, served.tokenizer, [prepared.request])[0].generations
        )
    assert gated.prefills == [2, 3]  # the first job's two prompts, then the three queued ones at once


def test_a_bad_request_prefilled_with_others_fails_alone(served):
    bad = prepare(served.tokenizer, request("boom", do_sample=False), 128)
    engine, gated = engine_for(served, fail_prefill=bad.rows[0].prompt)
    queued, jobs = queued_behind_a_step(served, engine, gated, ["Mary had a little", "boom", "Once"])
    with pytest.raises(JobFailed, match="breaks the model"):
        list(jobs[1].tokens(timeout_s=60))
    for index in (0, 2):
        assert (
            texts_of(served, jobs[index], queued[index])
            == generate(served.model, served.tokenizer, [queued[index].request])[0].generations
        )
    assert gated.prefills == [2, 1, 1]  # the batch failed as a whole; each good one then started alone


def test_a_failing_step_fails_the_running_requests_and_the_engine_serves_on(served):
    engine, gated = engine_for(served)
    running = prepare(served.tokenizer, request(PROMPTS, seed=3), 128)
    job = engine.submit(running.rows)
    gated.fail_step = True
    gated.go.release(1)
    with pytest.raises(JobFailed, match="broke mid-step"):
        list(job.tokens(timeout_s=60))
    gated.fail_step = False
    gated.go.release(1000)
    assert (
        texts_of(served, engine.submit(running.rows), running)
        == generate(served.model, served.tokenizer, [running.request])[0].generations
    )


def test_the_cache_is_static_and_steps_read_only_the_positions_reached(served):
    forward = Gpt2CachedForward(served.model, slots=3)
    buffers = [cache.data_ptr() for cache in (*forward.keys, *forward.values)]
    decoder = ContinuousDecoder(forward, eos_ids(served.model))
    prepared = prepare(served.tokenizer, request(PROMPTS + ["x"], do_sample=False, max_new_tokens=6), 128)
    decoder.add(prepared.rows)
    while decoder.running:
        decoder.step()
    assert [cache.data_ptr() for cache in (*forward.keys, *forward.values)] == buffers
    assert forward.keys[0].shape == (3, served.model.config.n_head, 128, served.model.config.n_embd // 2)


@pytest.mark.slow
def test_real_azmlinfsrv_answers_concurrent_requests_each_with_its_settings(tiny_model_dir, tmp_path):
    model_root = tmp_path / "azureml-models" / "gpt2-pdf" / "2"
    shutil.copytree(tiny_model_dir, model_root / tiny_model_dir.name)
    bodies = [
        {"prompt": PROMPTS, "seed": 11, "num_return_sequences": 3, "max_new_tokens": 6},
        {"prompt": "Diogo is", "do_sample": False, "max_new_tokens": 15, "repetition_penalty": 1.4},
        {"prompt": PROMPTS[1], "seed": 12, "temperature": 1.5, "top_k": 0, "top_p": 0.8, "max_new_tokens": 9},
        {"prompt": ["a", "b", "c"], "seed": 13, "num_return_sequences": 2, "top_k": 3},
        {"prompt": "fox " * 200},  # too long: 400 for this one only
        *({"prompt": f"Request {i} says", "seed": 100 + i, "max_new_tokens": 4 + i} for i in range(11)),
    ]
    with running_scoring_server(model_root) as base_url, httpx.Client(base_url=base_url, timeout=120) as http:
        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(lambda body: http.post("/score", json=body), bodies))
        for body, answer in zip(bodies, answers):
            if body["prompt"] == "fox " * 200:
                assert answer.status_code == 400 and answer.json()["field"] == "prompt"
                continue
            assert answer.status_code == 200, answer.text
            parameters = answer.json()["parameters"]
            assert {key: parameters[key] for key in body if key != "prompt"} == {
                k: v for k, v in body.items() if k != "prompt"
            }
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            expected = [parameters["num_return_sequences"]] * len(prompts)
            assert [len(texts) for texts in answer.json()["generations"]] == expected
        # Sent again one at a time, seeded and greedy requests give the same text as they did in a crowd.
        for body, answer in list(zip(bodies, answers))[:4]:
            assert http.post("/score", json=body).json()["generations"] == answer.json()["generations"]
