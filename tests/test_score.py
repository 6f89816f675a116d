"""The AML scoring script: request validation, batched generation, model folder handling, and the real server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from score_script import call, init_score
from tiny_model import make_tiny_model

from aks_jobs import score
from aks_jobs.lm.prompt_format import SECTION_START, instruction_prompt
from aks_jobs.lm.scoring_request import MAX_SEED, RequestError, parse_request
from aks_jobs.lm.serving_limits import ServingLimits
from aks_jobs.lm.serving_model import ModelFolderError, find_model_dir, load_serving_model, model_identity
from local_stack.scoring_server import ScoringServerError, running_scoring_server

DESIGN_DEFAULTS = {
    "max_new_tokens": 50,
    "temperature": 0.7,
    "top_k": 50,
    "top_p": 0.95,
    "repetition_penalty": 1.0,
    "num_return_sequences": 1,
    "do_sample": True,
    "stop": [],
    "format": "completion",
    "input": "",
}
PROMPTS = ["Diogo is", "The quick brown fox jumps over the"]  # different lengths: left padding matters
CPU = ServingLimits.for_device("cpu")  # the tests' server runs on the CPU


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "gpt2-pdf-model")  # context of 128 tokens


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    return init_score(tiny_model_dir)


BAD_REQUESTS = [
    ("not json", "body"),
    ("", "body"),
    ("[1, 2]", "body"),
    ('"just a string"', "body"),
    ({}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "  \n"}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": {"text": "hi"}}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": ["x"] * (CPU.max_prompts + 1)}, "prompt"),
    ({"prompt": ["ok", 3]}, "prompt[1]"),
    ({"prompt": ["ok", ""]}, "prompt[1]"),
    ({"prompt": "hi", "max_tokens": 5}, "max_tokens"),
    ({"prompt": "hi", "max_new_tokens": 0}, "max_new_tokens"),
    ({"prompt": "hi", "max_new_tokens": CPU.max_new_tokens + 1}, "max_new_tokens"),
    ({"prompt": "hi", "max_new_tokens": True}, "max_new_tokens"),
    ({"prompt": "hi", "max_new_tokens": "5"}, "max_new_tokens"),
    ({"prompt": "hi", "max_new_tokens": 5.0}, "max_new_tokens"),
    ({"prompt": "hi", "temperature": 0}, "temperature"),
    ({"prompt": "hi", "temperature": 1e-300}, "temperature"),  # would overflow the logits to inf
    ({"prompt": "hi", "temperature": -0.5}, "temperature"),
    ({"prompt": "hi", "temperature": 2.5}, "temperature"),
    ({"prompt": "hi", "temperature": "hot"}, "temperature"),
    ({"prompt": "hi", "temperature": True}, "temperature"),
    ('{"prompt": "hi", "temperature": NaN}', "temperature"),
    ({"prompt": "hi", "top_k": -1}, "top_k"),
    ({"prompt": "hi", "top_k": 1.5}, "top_k"),
    ({"prompt": "hi", "top_k": False}, "top_k"),
    ({"prompt": "hi", "top_p": 0}, "top_p"),
    ({"prompt": "hi", "top_p": -0.1}, "top_p"),
    ({"prompt": "hi", "top_p": 1.01}, "top_p"),
    ({"prompt": "hi", "top_p": [0.9]}, "top_p"),
    ({"prompt": "hi", "repetition_penalty": 0}, "repetition_penalty"),
    ({"prompt": "hi", "repetition_penalty": 1e-300}, "repetition_penalty"),
    ({"prompt": "hi", "repetition_penalty": 11}, "repetition_penalty"),
    ({"prompt": "hi", "num_return_sequences": 0}, "num_return_sequences"),
    ({"prompt": "hi", "num_return_sequences": CPU.max_return_sequences + 1}, "num_return_sequences"),
    ({"prompt": "hi", "num_return_sequences": True}, "num_return_sequences"),
    ({"prompt": "hi", "num_return_sequences": 2, "do_sample": False}, "num_return_sequences"),
    ({"prompt": ["x"] * CPU.max_prompts, "num_return_sequences": 3}, "num_return_sequences"),
    ({"prompt": "hi", "do_sample": "yes"}, "do_sample"),
    ({"prompt": "hi", "do_sample": 1}, "do_sample"),
    ({"prompt": "hi", "seed": -1}, "seed"),
    ({"prompt": "hi", "seed": MAX_SEED + 1}, "seed"),
    ({"prompt": "hi", "seed": 1.5}, "seed"),
    ({"prompt": "hi", "seed": True}, "seed"),
    ({"prompt": "hi", "seed": "7"}, "seed"),
    # The tiny model's context is 128 tokens.
    ({"prompt": "hi", "max_new_tokens": 128}, "max_new_tokens"),
    ({"prompt": "fox " * 200}, "prompt"),
    ({"prompt": ["fox", "fox " * 200]}, "prompt[1]"),
    ({"prompt": "fox " * 40, "max_new_tokens": 100}, "prompt"),
]


@pytest.mark.parametrize(
    ("body", "field"), BAD_REQUESTS, ids=[f"{i}-{field}" for i, (_, field) in enumerate(BAD_REQUESTS)]
)
def test_bad_request_is_400_naming_the_field(served, body, field):
    status, answer = call(body)
    assert status == 400
    assert answer["field"] == field
    assert f"'{field}'" in answer["message"]


@pytest.mark.parametrize(
    "limits",
    [
        {"temperature": 0.01, "repetition_penalty": 0.1, "top_p": 1e-9},
        {"temperature": 2.0, "repetition_penalty": 10.0, "top_k": 0, "top_p": 1.0},
        {"top_k": 10**30, "seed": MAX_SEED, "max_new_tokens": 1},
    ],
)
def test_values_at_the_limits_generate(served, limits):
    status, answer = call({"prompt": PROMPTS, "max_new_tokens": 8, **limits})
    assert status == 200, answer
    assert all(len(texts) == 1 for texts in answer["generations"])


def test_prompt_may_fill_the_context_exactly(served):
    prompt = "fox " * 20
    room = served.model.config.n_positions - len(served.tokenizer(prompt)["input_ids"])
    assert call({"prompt": prompt, "max_new_tokens": room, "do_sample": False})[0] == 200
    status, answer = call({"prompt": prompt, "max_new_tokens": room + 1})
    assert (status, answer["field"]) == (400, "prompt")


def test_non_utf8_bytes_are_rejected():
    with pytest.raises(RequestError) as caught:
        parse_request(b'{"prompt": "\xff"}')
    assert caught.value.field == "body"


def test_unknown_fields_are_all_listed():
    with pytest.raises(RequestError) as caught:
        parse_request('{"prompt": "hi", "zeta": 1, "alpha": 2}')
    assert caught.value.field == "alpha"
    assert "alpha, zeta" in str(caught.value) and "max_new_tokens" in str(caught.value)


def test_design_defaults_apply_and_null_means_default():
    for body in ('{"prompt": "hi"}', json.dumps({"prompt": "hi", **{name: None for name in DESIGN_DEFAULTS}})):
        parameters = parse_request(body).parameters()
        assert {k: v for k, v in parameters.items() if k != "seed"} == DESIGN_DEFAULTS
        assert 0 <= parameters["seed"] <= MAX_SEED


def test_single_prompt_response(served):
    status, answer = call({"prompt": "Diogo is"})
    assert status == 200
    assert set(answer) == {"generations", "model", "usage", "parameters"}
    assert len(answer["generations"]) == 1 and len(answer["generations"][0]) == 1
    assert isinstance(answer["generations"][0][0], str)
    cpu_default = {"name": "gpt2-pdf-model", "version": "unknown", "weights": "int8", "kinds": []}
    assert answer["model"] == cpu_default
    assert answer["usage"]["prompt_tokens"] == len(served.tokenizer("Diogo is")["input_ids"])
    assert 1 <= answer["usage"]["completion_tokens"] <= DESIGN_DEFAULTS["max_new_tokens"]
    assert {k: v for k, v in answer["parameters"].items() if k != "seed"} == DESIGN_DEFAULTS


def test_list_prompts_with_several_sequences_run_in_one_batch(served):
    steps = score._service.engine.steps
    status, answer = call({"prompt": PROMPTS, "num_return_sequences": 3, "max_new_tokens": 8, "seed": 1})
    assert status == 200
    assert score._service.engine.steps - steps <= 8  # the six sequences advanced together
    assert [len(texts) for texts in answer["generations"]] == [3, 3]
    assert len(set(answer["generations"][0])) > 1  # each sequence draws its own numbers
    prompt_tokens = sum(len(served.tokenizer(p)["input_ids"]) for p in PROMPTS)
    assert answer["usage"]["prompt_tokens"] == prompt_tokens
    assert 6 <= answer["usage"]["completion_tokens"] <= 6 * 8


def test_seeded_requests_are_reproducible(served):
    request = {"prompt": PROMPTS, "num_return_sequences": 2, "max_new_tokens": 20, "seed": 1234}
    first, second = call(request)[1], call(request)[1]
    other_seed = call({**request, "seed": 1235})[1]
    assert first["generations"] == second["generations"]
    assert other_seed["generations"] != first["generations"]


def test_unseeded_request_reports_a_seed_that_reproduces_it(served):
    request = {"prompt": "Diogo is", "max_new_tokens": 20}
    unseeded = call(request)[1]
    replay = call({**request, "seed": unseeded["parameters"]["seed"]})[1]
    assert replay["generations"] == unseeded["generations"]


def test_greedy_batch_equals_plain_generate_per_prompt(served):
    status, answer = call({"prompt": PROMPTS, "do_sample": False, "max_new_tokens": 12})
    assert status == 200
    model, tokenizer = served.model, served.tokenizer
    for prompt, texts in zip(PROMPTS, answer["generations"]):
        encoded = tokenizer(prompt, return_tensors="pt")
        plain = model.generate(**encoded, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert texts == [tokenizer.decode(plain[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)]


@pytest.mark.parametrize(
    ("model_root", "env", "expected"),
    [
        ("/var/azureml-app/azureml-models/gpt2-pdf/7", {}, ("gpt2-pdf", "7")),
        ("/var/azureml-app/azureml-models/gpt2-pdf/7/", {}, ("gpt2-pdf", "7")),
        ("/var/azureml-app/azureml-models/gpt2-pdf", {}, ("gpt2-pdf", "unknown")),
        ("/var/azureml-app/azureml-models/gpt2-pdf/7", {"MODEL_NAME": "chat", "MODEL_VERSION": "9"}, ("chat", "9")),
        ("/var/azureml-app/azureml-models/gpt2-pdf/7", {"MODEL_VERSION": "9"}, ("gpt2-pdf", "9")),
        ("/models/trained-run-3", {}, ("trained-run-3", "unknown")),
        ("/", {}, ("unknown", "unknown")),
    ],
)
def test_model_identity(model_root, env, expected):
    assert model_identity(model_root, env) == expected


def _config_at(*folders: Path) -> None:
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text("{}")


def test_find_model_dir_handles_registration_levels(tmp_path):
    direct, registered, mlflow, with_checkpoint = (tmp_path / name for name in ("d", "r", "m", "c"))
    _config_at(
        direct,
        registered / "gpt2-pdf-model",
        mlflow / "gpt2-pdf" / "model",
        with_checkpoint,
        with_checkpoint / "checkpoint-10",
    )
    (mlflow / "gpt2-pdf" / "MLmodel").write_text("flavors: {}")
    assert find_model_dir(direct) == direct
    assert find_model_dir(registered) == registered / "gpt2-pdf-model"
    assert find_model_dir(mlflow) == mlflow / "gpt2-pdf" / "model"
    assert find_model_dir(with_checkpoint) == with_checkpoint


def test_find_model_dir_errors_are_clear(tmp_path):
    (tmp_path / "empty").mkdir()
    _config_at(tmp_path / "two" / "a", tmp_path / "two" / "b")
    with pytest.raises(ModelFolderError, match="no config.json"):
        find_model_dir(tmp_path / "empty")
    with pytest.raises(ModelFolderError, match=r"several model folders .*\(a, b\)"):
        find_model_dir(tmp_path / "two")
    with pytest.raises(ModelFolderError, match="is not a folder"):
        find_model_dir(tmp_path / "missing")
    with pytest.raises(ModelFolderError, match="AZUREML_MODEL_DIR is not set"):
        load_serving_model({})


def test_loads_aml_registered_folder_and_mlflow_layout(tiny_model_dir, tmp_path):
    aml_root = tmp_path / "azureml-models" / "gpt2-pdf" / "3"
    shutil.copytree(tiny_model_dir, aml_root / tiny_model_dir.name)
    loaded = load_serving_model({"AZUREML_MODEL_DIR": str(aml_root)})
    assert (loaded.name, loaded.version, loaded.folder) == ("gpt2-pdf", "3", aml_root / tiny_model_dir.name)
    assert not loaded.model.training and loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token

    # MLflow's transformers flavor: weights in model/, tokenizer in components/tokenizer/.
    mlflow_root = tmp_path / "mlflow" / "gpt2-pdf"
    shutil.copytree(
        tiny_model_dir, mlflow_root / "model", ignore=shutil.ignore_patterns("tokenizer*", "vocab.json", "merges.txt")
    )
    shutil.copytree(
        tiny_model_dir,
        mlflow_root / "components" / "tokenizer",
        ignore=shutil.ignore_patterns("model.safetensors", "config.json", "generation_config.json"),
    )
    loaded = load_serving_model({"AZUREML_MODEL_DIR": str(tmp_path / "mlflow"), "MODEL_VERSION": "4"})
    assert (loaded.name, loaded.version, loaded.folder) == ("mlflow", "4", mlflow_root / "model")
    assert len(loaded.tokenizer) == loaded.model.config.vocab_size


@pytest.mark.slow
def test_real_azmlinfsrv_serves_good_and_rejects_bad_requests(tiny_model_dir, tmp_path):
    model_root = tmp_path / "azureml-models" / "gpt2-pdf" / "5"
    shutil.copytree(tiny_model_dir, model_root / tiny_model_dir.name)
    good = {"prompt": PROMPTS, "max_new_tokens": 10, "num_return_sequences": 2, "seed": 42}
    with running_scoring_server(model_root) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
        first = http.post("/score", json=good)
        assert first.status_code == 200, first.text
        assert first.json()["model"] == {"name": "gpt2-pdf", "version": "5", "weights": "int8", "kinds": []}
        assert [len(texts) for texts in first.json()["generations"]] == [2, 2]

        for body, field in [
            ("not json", "body"),
            ('{"prompt": "hi", "max_new_tokens": true}', "max_new_tokens"),
            ('{"prompt": "hi", "stream": "yes"}', "stream"),
            (json.dumps({"prompt": "fox " * 200}), "prompt"),
        ]:
            bad = http.post("/score", content=body, headers={"Content-Type": "application/json"})
            assert bad.status_code == 400, bad.text
            assert bad.json()["field"] == field and f"'{field}'" in bad.json()["message"]
        # A form-encoded POST reaches run() as "" (the form parser took the body): say which header to send.
        form = http.post("/score", data={"prompt": "hi"})
        assert form.status_code == 400 and "Content-Type: application/json" in form.json()["message"]
        # The server itself rejects bodies that are not UTF-8, before run().
        not_utf8 = http.post("/score", content=b'{"prompt": "\xff"}')
        assert not_utf8.status_code == 400 and "UTF-8" in not_utf8.json()["message"]

        # Still serving, and a seeded request gives the same answer as before the bad ones.
        again = http.post("/score", json=good)
        assert again.status_code == 200 and again.json()["generations"] == first.json()["generations"]
        # GET query parameters are parsed as JSON values by the server, so they validate the same way.
        query = http.get("/score", params={"prompt": "Diogo is", "max_new_tokens": 3, "seed": 1})
        assert query.status_code == 200 and query.json()["parameters"]["max_new_tokens"] == 3


@pytest.mark.slow
def test_server_that_cannot_load_its_model_fails_fast_with_the_reason(tmp_path):
    with pytest.raises(ScoringServerError, match="no config.json"):
        with running_scoring_server(tmp_path):
            pass


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "hi", "format": "chat"}, "format"),
        ({"prompt": "hi", "input": "context"}, "input"),  # an Input section needs the instruction format
        ({"prompt": "hi", "format": "instruction", "input": 3}, "input"),
        ({"prompt": "hi", "format": "instruction", "history": ["earlier"]}, "history"),
    ],
)
def test_bad_instruction_requests_name_the_field(body, field):
    with pytest.raises(RequestError) as caught:
        parse_request(json.dumps(body))
    assert caught.value.field == field


def test_instruction_format_asks_in_the_training_template_and_answers_with_the_response(served):
    request = parse_request(json.dumps({"prompt": "Name the keeper.", "format": "instruction", "input": "Pier 4"}))
    assert request.prompt_texts == (instruction_prompt("Name the keeper.", "Pier 4"),)
    assert request.stop_sequences[-1] == SECTION_START  # decoding ends where another section would start
    status, answer = call(
        {"prompt": "Name the keeper.", "format": "instruction", "max_new_tokens": 20, "do_sample": False}
    )
    assert status == 200 and answer["parameters"]["format"] == "instruction"
    [[text]] = answer["generations"]
    assert "### " not in text and text == text.strip()
