"""Int8 weights for CPU serving: close to float32, a row's output independent of its batch, on by default on CPU
only, the float path unchanged, and the decode loop's promises (greedy = generate(), seeds) kept with them."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM
from transformers.activations import GELUTanh, NewGELUActivation
from transformers.pytorch_utils import Conv1D

from aks_jobs.lm import int8_weights
from aks_jobs.lm.generation import Completion, generate
from aks_jobs.lm.int8_weights import Int8Linear, fuse_gelu, quantize_linear_layers
from aks_jobs.lm.perplexity import score_texts
from aks_jobs.lm.scoring_request import parse_request
from aks_jobs.lm.serving_model import ServingSettingError, load_serving_model, served_weights
from synthetic_data.prose import prose
from synthetic_data.small_model import train_small_model

PROMPTS = ["The archive near the", "The lamp", "The council near the harbour keeps 12"]


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    return train_small_model(tmp_path_factory.mktemp("trained") / "model")


@pytest.fixture(scope="module")
def int8_served(trained_dir):
    served = load_serving_model({"AZUREML_MODEL_DIR": str(trained_dir)})  # the CPU default
    assert served.weights == "int8"
    return served


@pytest.fixture(scope="module")
def float_served(trained_dir):
    return load_serving_model({"AZUREML_MODEL_DIR": str(trained_dir), "SCORING_WEIGHTS": "float"})


@pytest.mark.parametrize("layer", [nn.Linear(48, 80), Conv1D(80, 48)], ids=["Linear", "Conv1D"])
def test_int8_layer_is_close_to_float(layer):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 48)
    expected = layer(x)
    got = Int8Linear.from_float(layer)(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    error = (got - expected).norm() / expected.norm()
    assert 1e-5 < error < 0.02  # quantized (not a float copy), yet within 2%


def test_a_row_gives_the_same_output_alone_or_beside_any_other_rows():
    # Activations are scaled per row and summed exactly in int32: a neighbour 1000x larger changes nothing.
    # (Per-tensor dynamic quantization, torch.ao's quantize_dynamic, fails this.)
    torch.manual_seed(0)
    layer = Int8Linear.from_float(nn.Linear(64, 32))
    row = torch.randn(1, 64)
    alone = layer(row)
    # 3, 8, 32 and 70 rows (a prefill) take torch._int_mm or oneDNN's prepacked kernel: the same floats either way.
    for neighbours in (torch.randn(7, 64) * 1000, torch.zeros(2, 64), torch.randn(31, 64) * 1e-3, torch.randn(69, 64)):
        together = layer(torch.cat([neighbours[:2], row, neighbours[2:]]))
        assert torch.equal(together[2], alone[0])


@pytest.mark.skipif(not int8_weights._ONEDNN_INT8, reason="this build of torch has no oneDNN int8 linear")
def test_decode_steps_use_the_weight_packed_once_and_the_layer_still_copies():
    layer = Int8Linear.from_float(nn.Linear(64, 32))
    layer(torch.randn(32, 64))
    packed = layer._packed
    assert packed is not None and packed.is_mkldnn
    layer(torch.randn(16, 64))
    assert layer._packed is packed
    copied = copy.deepcopy(layer)  # an opaque oneDNN tensor cannot be copied: packed again on use
    x = torch.randn(9, 64)
    assert torch.equal(copied(x), layer(x))


def test_every_linear_layer_of_gpt2_becomes_int8_and_embeddings_stay_float(float_served, trained_dir):
    model = AutoModelForCausalLM.from_pretrained(trained_dir)
    replaced = quantize_linear_layers(model)
    assert replaced == 4 * model.config.n_layer + 1  # c_attn, attn c_proj, c_fc, mlp c_proj per block; the head
    assert not [name for name, module in model.named_modules() if isinstance(module, (nn.Linear, Conv1D))]
    assert model.transformer.wte.weight.dtype == torch.float32
    assert torch.equal(model.transformer.wte.weight, float_served.model.transformer.wte.weight)


def test_the_int8_model_runs_gpt2s_gelu_as_one_fused_op_and_the_float_model_as_saved(int8_served, float_served):
    assert {type(block.mlp.act) for block in int8_served.model.transformer.h} == {GELUTanh}
    assert {type(block.mlp.act) for block in float_served.model.transformer.h} == {NewGELUActivation}
    x = torch.linspace(-8, 8, 10_001)
    torch.testing.assert_close(GELUTanh()(x), NewGELUActivation()(x), rtol=1e-6, atol=1e-6)  # the same function
    assert fuse_gelu(nn.Sequential(nn.ReLU())) == 0  # other activations are left alone


@pytest.mark.parametrize(
    ("env", "device", "expected"),
    [
        ({}, "cpu", "int8"),
        ({"SCORING_WEIGHTS": "auto"}, "cpu", "int8"),
        ({"SCORING_WEIGHTS": "INT8"}, "cpu", "int8"),
        ({"SCORING_WEIGHTS": "float"}, "cpu", "float32"),
        ({}, "cuda", "bfloat16"),
        ({"SCORING_WEIGHTS": "float"}, "cuda", "bfloat16"),
    ],
)
def test_weights_setting_is_int8_on_cpu_by_default_and_off_on_gpu(env, device, expected):
    assert served_weights(env, torch.device(device)) == expected


@pytest.mark.parametrize(("value", "device"), [("int4", "cpu"), ("", "cpu"), ("int8", "cuda")])
def test_a_bad_weights_setting_names_the_variable(value, device):
    with pytest.raises(ServingSettingError, match="SCORING_WEIGHTS"):
        served_weights({"SCORING_WEIGHTS": value}, torch.device(device))


def test_float_setting_serves_the_saved_weights_with_unchanged_greedy_output(float_served, trained_dir):
    assert float_served.weights == "float32"
    assert any(isinstance(module, Conv1D) for module in float_served.model.modules())
    plain = AutoModelForCausalLM.from_pretrained(trained_dir).eval()  # the float32 model as train.py saved it
    tokenizer = float_served.tokenizer
    answers = generate(
        float_served.model,
        tokenizer,
        [parse_request(json.dumps({"prompt": prompt, "do_sample": False, "max_new_tokens": 20})) for prompt in PROMPTS],
    )
    for prompt, answer in zip(PROMPTS, answers):
        ids = tokenizer(prompt, return_tensors="pt")
        expected = plain.generate(**ids, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert answer.generations == [[tokenizer.decode(expected[0, ids["input_ids"].shape[1] :])]]


def test_int8_perplexity_on_held_out_text_is_within_2_percent_of_float32(int8_served, float_served):
    held_out = prose(seed=99, sentences=200).splitlines()
    exact = score_texts(float_served.model, float_served.tokenizer, held_out)
    quantized = score_texts(int8_served.model, int8_served.tokenizer, held_out)
    assert exact.perplexity < 0.1 * len(float_served.tokenizer)  # it learned the text: the check means something
    assert quantized.perplexity != exact.perplexity
    assert quantized.perplexity <= 1.02 * exact.perplexity


def test_decode_loop_with_int8_weights_keeps_greedy_and_seeds(int8_served):
    model, tokenizer = int8_served.model, int8_served.tokenizer

    def request(prompt, **settings):
        return parse_request(json.dumps({"prompt": prompt, "max_new_tokens": 16, **settings}))

    # Greedy rows beside sampled ones with their own settings: each equals generate() on its prompt alone.
    mixed = [
        request(PROMPTS[0], do_sample=False),
        request(PROMPTS[1], seed=5, temperature=1.3, top_k=0),
        request(PROMPTS[2], do_sample=False, repetition_penalty=1.3),
        request(PROMPTS[1], seed=7, top_p=0.5),
    ]
    answers = generate(model, tokenizer, mixed)
    assert all(isinstance(answer, Completion) for answer in answers), answers
    for index, penalty in ((0, 1.0), (2, 1.3)):
        ids = tokenizer(PROMPTS[index], return_tensors="pt")
        plain = model.generate(
            **ids, max_new_tokens=16, do_sample=False, repetition_penalty=penalty, pad_token_id=tokenizer.pad_token_id
        )
        assert answers[index].generations == [[tokenizer.decode(plain[0, ids["input_ids"].shape[1] :])]]
    # A seeded request gives the same text alone as in the mixed batch.
    for index in (1, 3):
        assert generate(model, tokenizer, [mixed[index]])[0].generations == answers[index].generations
    assert answers[1].generations != answers[3].generations
