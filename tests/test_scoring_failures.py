"""Issue 12's failures of the scoring server, each pinned by a test that fails on the code before the fix:
(1) a lone surrogate failed everything batched with it, (2) a huge prompt was tokenized on the shared thread,
(3) GPU-sized limits on CPU, no bound on the queue, no deadline, no cancellation, a health probe behind
generation, (4) a number of more than 4,300 digits was a 500, (5) local servers listened on every interface."""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gated_forward import GatedForward
from score_script import call, init_score
from tiny_model import make_tiny_model
from transformers import PreTrainedTokenizerBase

from aks_jobs.lm.kv_forward import Gpt2CachedForward
from aks_jobs.lm.scoring_request import RequestError, parse_request
from aks_jobs.lm.scoring_service import ScoringService
from aks_jobs.lm.serving_limits import ServingLimits
from local_stack import deployment as local_deploy
from local_stack.gunicorn_loopback import loopback_binds
from local_stack.scoring_server import running_scoring_server

GOOD = {"prompt": ["Diogo is", "The quick brown fox"], "seed": 5, "max_new_tokens": 12, "num_return_sequences": 2}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "gpt2-pdf-model")


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    return init_score(tiny_model_dir)


def gated_service(served, **limits) -> tuple[ScoringService, GatedForward]:
    settings = ServingLimits(**{"max_rows": 8, "max_request_rows": 8, **limits})
    gated = GatedForward(Gpt2CachedForward(served.model, settings.max_rows))
    return ScoringService(served, gated, settings), gated


# (1) -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "\ud800"}, "prompt"),
        ({"prompt": ["fine", "bad \udfff text"]}, "prompt[1]"),
        ({"prompt": "fine", "stop": ["ok", "\ud83d"]}, "stop[1]"),
        ({"prompt": "fine", "history": ["\udc00"]}, "history[0]"),
    ],
)
def test_text_that_is_not_valid_unicode_is_a_400_naming_the_field(served, body, field):
    status, answer = call(json.dumps(body))  # json.dumps writes lone surrogates as valid \\uXXXX escapes
    assert (status, answer["field"]) == (400, field), answer
    assert "lone surrogate" in answer["message"]


def test_a_lone_surrogate_fails_only_its_own_request(served):
    bad = json.dumps({"prompt": "\ud800", "max_new_tokens": 5})
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(call, [GOOD, bad, GOOD, bad, GOOD, GOOD]))
    assert [status for status, _ in answers] == [200, 400, 200, 400, 200, 200]
    assert len({json.dumps(answer["generations"]) for status, answer in answers if status == 200}) == 1


def test_an_error_while_decoding_text_fails_only_its_own_request(served, monkeypatch):
    decode = PreTrainedTokenizerBase.decode

    def failing_for_one_thread(self, *args, **kwargs):
        if threading.current_thread().name == "broken-client":
            raise RuntimeError("cannot decode these tokens")
        return decode(self, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "decode", failing_for_one_thread)
    results: dict[str, object] = {}

    def client(name: str) -> None:
        try:
            results[name] = call(GOOD)
        except RuntimeError as err:
            results[name] = err

    threads = [
        threading.Thread(target=client, args=(name,), name=name) for name in ("broken-client", "client-1", "client-2")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert isinstance(results["broken-client"], RuntimeError)
    assert results["client-1"][0] == results["client-2"][0] == 200


# (2) -----------------------------------------------------------------------------------------------------------


def test_an_oversized_prompt_is_refused_before_anything_tokenizes_it(served, monkeypatch):
    longest: list[int] = [0]
    tokenize = PreTrainedTokenizerBase.__call__

    def recording(self, text, *args, **kwargs):
        texts = [text] if isinstance(text, str) else text
        longest[0] = max([longest[0], *map(len, texts)])
        return tokenize(self, text, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", recording)
    limits = ServingLimits.for_device("cpu")
    eight_mib = "fox " * (2 * 1024 * 1024)
    status, answer = call({"prompt": eight_mib})
    assert (status, answer["field"]) == (400, "body")
    status, answer = call({"prompt": "x" * (limits.max_prompt_chars + 1)})
    assert (status, answer["field"]) == (400, "prompt") and "characters" in answer["message"]
    assert longest[0] == 0  # neither reached the tokenizer
    assert call({"prompt": "Diogo is", "max_new_tokens": 3})[0] == 200


# (3) -----------------------------------------------------------------------------------------------------------


def test_cpu_deployments_get_cpu_sized_limits_that_settings_can_change(served, monkeypatch):
    status, answer = call({"prompt": ["x"] * 8, "num_return_sequences": 8, "max_new_tokens": 512})
    assert status == 400 and "on this deployment (cpu)" in answer["message"]
    cpu, gpu = ServingLimits.for_device("cpu"), ServingLimits.for_device("cuda:0")
    assert cpu.max_rows * cpu.max_new_tokens < gpu.max_rows * gpu.max_new_tokens
    monkeypatch.setenv("SCORING_MAX_NEW_TOKENS", "20")
    assert ServingLimits.for_device("cpu").max_new_tokens == ServingLimits.for_device("cuda").max_new_tokens == 20
    with pytest.raises(RequestError) as refused:
        parse_request('{"prompt": "hi", "max_new_tokens": 21}', ServingLimits.for_device("cpu"))
    assert refused.value.field == "max_new_tokens"


def test_a_full_server_answers_503_with_retry_after_at_once(served):
    service, gated = gated_service(served, max_requests=2)
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(service.reply, json.dumps(GOOD)) for _ in range(2)]
        while service.engine.in_flight < 2:
            time.sleep(0.01)
        refused = service.reply(json.dumps(GOOD))
        assert refused.status == 503 and int(refused.headers["Retry-After"]) >= 1
        gated.go.release(10_000)
        assert [future.result(timeout=60).status for future in held] == [200, 200]


def test_a_request_past_its_deadline_gets_503_and_its_work_is_dropped(served):
    service, gated = gated_service(served, request_timeout_s=0.5)
    late = service.reply(json.dumps({**GOOD, "max_new_tokens": 50}))  # no step runs until released
    assert late.status == 503 and "Retry-After" in late.headers and "0.5 s" in late.body.message
    gated.go.release(10_000)
    ontime = ScoringService(served, gated, ServingLimits(max_rows=8, max_request_rows=8))
    assert ontime.reply(json.dumps(GOOD)).status == 200
    assert len(gated.step_rows) <= 2 + 11  # the late request ran at most the one step it was waiting in


def test_work_for_a_client_that_has_gone_is_dropped(served):
    service, gated = gated_service(served)
    gone = {"now": False}
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(service.reply, json.dumps({**GOOD, "max_new_tokens": 100}), lambda: gone["now"])
        gated.go.release(3)
        gated.wait_for_steps(4)
        gone["now"] = True
        while not waiting.done() and len(gated.step_rows) < 100:  # steps at a pace a real model would go
            gated.go.release(1)
            time.sleep(0.02)
        assert waiting.result(timeout=60).status == 499
        gated.go.release(10_000)
    for _ in range(200):
        if service.engine.in_flight == 0:
            break
        time.sleep(0.01)
    assert service.engine.in_flight == 0 and len(gated.step_rows) < 50


@pytest.mark.slow
def test_health_probe_answers_while_the_server_is_full_and_extra_requests_get_503(tiny_model_dir, tmp_path):
    model_root = tmp_path / "azureml-models" / "gpt2-pdf" / "3"
    shutil.copytree(tiny_model_dir, model_root / tiny_model_dir.name)
    long = {"prompt": "Diogo is", "max_new_tokens": 60, "num_return_sequences": 4, "seed": 1}
    env = {
        "SCORING_MAX_ROWS": "4",
        "SCORING_MAX_REQUEST_ROWS": "4",
        "SCORING_MAX_REQUESTS": "8",
        "SCORING_REQUEST_TIMEOUT_S": "600",
    }
    with (
        running_scoring_server(model_root, env=env) as base_url,
        httpx.Client(base_url=base_url, timeout=600) as http,
        ThreadPoolExecutor(24) as pool,
    ):
        # One request at a time fits the 4 slots: 8 are in flight for seconds, the others are refused at once.
        answers = [pool.submit(http.post, "/score", json=long) for _ in range(24)]
        time.sleep(1.0)
        assert httpx.get(base_url + "/", timeout=5).status_code == 200
        results = [answer.result() for answer in answers]
    refused = [result for result in results if result.status_code == 503]
    assert len(refused) + sum(result.status_code == 200 for result in results) == 24
    assert len(refused) >= 8 and all("full" in result.json()["message"] for result in refused)
    assert all(int(result.headers["Retry-After"]) >= 1 for result in refused)


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_the_real_server_drops_the_work_of_a_client_that_hung_up(tmp_path, stream):
    model = make_tiny_model(tmp_path / "gpt2-pdf", n_positions=1024)
    # No EOS, so the long request runs its 5 x 1,000 tokens whatever it samples (with EOS, when it stopped
    # depended on the weights: int8 ones stopped within a second).
    generation = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**generation, "eos_token_id": None}))
    # One request at a time: while the long one runs, any other is refused with 503.
    env = {"SCORING_MAX_REQUESTS": "1", "SCORING_MAX_NEW_TOKENS": "1000", "SCORING_REQUEST_TIMEOUT_S": "600"}
    long = {"prompt": "Diogo is", "max_new_tokens": 1000, "num_return_sequences": 5, "seed": 3, "stream": stream}
    short = {"prompt": "Diogo is", "max_new_tokens": 2}
    with running_scoring_server(model, env=env) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
        with httpx.Client(base_url=base_url, timeout=1.0) as impatient:
            if stream:  # the first piece, then the client closes the stream
                with impatient.stream("POST", "/score", json=long) as answer:
                    assert next(answer.iter_lines()).startswith("data: ")
            else:
                with pytest.raises(httpx.ReadTimeout):  # 5 x 1,000 tokens take far longer than a second
                    impatient.post("/score", json=long)
        assert http.post("/score", json=short).status_code == 503  # the long one still holds the server
        # Once the server notices the closed connection (within a second), the slot is free again.
        statuses = []
        for _ in range(40):
            statuses.append(http.post("/score", json=short).status_code)
            if statuses[-1] == 200:
                break
            time.sleep(0.25)
        assert statuses[-1] == 200, statuses


# (4) -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["seed", "max_new_tokens", "top_k", "temperature"])
def test_a_number_of_more_than_4300_digits_is_a_400_naming_its_field(served, field):
    status, answer = call(f'{{"prompt": "hi", "{field}": {"9" * 5000}}}')
    assert (status, answer["field"]) == (400, field), answer
    assert len(answer["message"]) < 300


# (5) -----------------------------------------------------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port`, from the kernel's own table."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.slow
def test_local_scoring_servers_listen_on_loopback_only(tiny_model_dir):
    with running_scoring_server(tiny_model_dir) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, little-endian hex; no 0.0.0.0 / ::


def test_local_deployments_use_the_loopback_configuration(monkeypatch, tmp_path):
    started = {}
    monkeypatch.setattr(local_deploy, "fetch_model", lambda *args: None)
    monkeypatch.setattr(local_deploy.os, "execve", lambda path, argv, env: started.update(argv=argv, env=env))
    local_deploy.main("gpt2-pdf", "3", str(tmp_path), "5099")
    config = started["env"]["GUNICORN_CMD_ARGS"].split("--config ")[1].split()[0]
    assert Path(config).name == "gunicorn_loopback.py" and Path(config).is_file()
    assert loopback_binds(["0.0.0.0:5001", "[::]:5000"]) == ["127.0.0.1:5001", "127.0.0.1:5000"]
