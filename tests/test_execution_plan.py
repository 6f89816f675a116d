"""How the recipe runs on the hardware: micro-batches, compile decision, padded vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train import run_train
from tiny_model import make_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config

from aks_jobs.lm.execution_plan import (
    COMPILE_MIN_TOKENS,
    bytes_per_block,
    choose_micro_batch,
    largest_divisor_at_most,
    pad_vocabulary,
    plan_execution,
    should_compile,
    trim_vocabulary,
)
from synthetic_data.prose import prose

GIB = 2**30
GPT2_SMALL = GPT2Config()  # 124M: 12 layers, 768 wide, vocab 50257, context 1024
GPT2_PARAMETERS = 124_439_808


def test_largest_divisor_keeps_the_optimizer_batch_whole() -> None:
    assert [largest_divisor_at_most(32, limit) for limit in (64, 32, 31, 11, 8, 1, 0)] == [32, 32, 16, 8, 8, 1, 1]
    assert largest_divisor_at_most(12, 5) == 4 and largest_divisor_at_most(7, 6) == 1


@pytest.mark.parametrize(("gpu_gib", "micro"), [(80, 32), (40, 32), (24, 16), (16, 8), (4, 1)])
def test_micro_batch_for_gpt2_small_follows_the_gpu_memory(gpu_gib: int, micro: int) -> None:
    # The notebook's 4 x 8 becomes one 32-block pass on an H100 or A100 and stays accumulated on a T4.
    per_block = bytes_per_block(GPT2_SMALL, 1024)
    assert 0.7 * GIB < per_block < 1.3 * GIB  # ~0.8 GB of activations per 1024-token block (no logits: fused loss)
    budget = int(gpu_gib * GIB * 0.85)
    assert choose_micro_batch(32, per_block, budget, GPT2_PARAMETERS) == micro


def test_compile_only_on_gpu_for_long_runs_unless_forced() -> None:
    assert not should_compile("auto", 10 * COMPILE_MIN_TOKENS, on_gpu=False)
    assert not should_compile("auto", COMPILE_MIN_TOKENS - 1, on_gpu=True)
    assert should_compile("auto", COMPILE_MIN_TOKENS, on_gpu=True)
    assert should_compile("on", 1, on_gpu=False) and not should_compile("off", 10 * COMPILE_MIN_TOKENS, on_gpu=True)


def test_a_micro_batch_that_does_not_divide_the_batch_is_refused(tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "m"))
    with pytest.raises(ValueError, match=r"--micro-batch 3 must divide .*\(8\)"):
        plan_execution(model, 64, 4, 2, micro_batch=3, compile_mode="auto", train_tokens=1000)
    plan = plan_execution(model, 64, 4, 2, micro_batch=None, compile_mode="auto", train_tokens=1000)
    # A CPU keeps the recipe's split; fused AdamW runs on CPU as on CUDA.
    assert plan.to_dict() == {"micro_batch": 4, "grad_accum": 2, "compile": False, "optimizer": "adamw_torch_fused"}
    assert plan_execution(model, 64, 4, 2, micro_batch=8, compile_mode="on", train_tokens=1).grad_accum == 1


def test_padded_vocabulary_leaves_real_tokens_unchanged_and_trims_back(tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "m")).eval()
    size = model.config.vocab_size
    assert size % 64
    ids = torch.tensor([[1, 5, 9, size - 1]])
    before = model(ids).logits

    assert pad_vocabulary(model) == size
    padded = model.get_input_embeddings().num_embeddings
    assert padded % 64 == 0 and size < padded < size + 64
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert torch.allclose(model(ids).logits[..., :size], before, atol=1e-6)

    trim_vocabulary(model, size)
    assert model.config.vocab_size == size and torch.allclose(model(ids).logits, before, atol=1e-6)


@pytest.mark.slow
def test_compiled_accumulated_run_saves_a_plain_model_the_tokenizer_size(tmp_path: Path) -> None:
    # The GPU levers' wiring, run on CPU: torch.compile through the Trainer, a micro-batch smaller than the
    # batch (accumulation), the padded vocabulary trimmed before saving.
    (tmp_path / "t.txt").write_text(prose(11, 60))
    output = tmp_path / "model"
    result = run_train(
        "--data",
        str(tmp_path / "t.txt"),
        "--output",
        str(output),
        "--base-model",
        "offline",
        "--block-size",
        "64",
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--grad-accum",
        "1",
        "--micro-batch",
        "2",
        "--compile",
        "on",
        "--experiment",
        "compiled",
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"},
    )

    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["execution"] == {
        "micro_batch": 2,
        "grad_accum": 2,
        "compile": True,
        "optimizer": "adamw_torch_fused",
    }
    assert summary["steps"] == 2 and summary["hyperparameters"]["effective_batch"] == 4
    model, tok = AutoModelForCausalLM.from_pretrained(output), AutoTokenizer.from_pretrained(output)
    assert model.config.vocab_size == len(tok)
    assert not any(key.startswith("_orig_mod") for key in model.state_dict())
    assert summary["eval_loss"] > 0 and summary["tokens_per_s"] > 0
