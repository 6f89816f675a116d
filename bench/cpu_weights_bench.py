"""The candidates for CPU serving weights, measured inside our own decode step (lm.kv_forward.Gpt2CachedForward).

    .venv/bin/python -m bench.cpu_weights_bench [--candidates float32,bfloat16,dynamic-int8,int8] [--batches 1,16]
                                                [--rounds 3] [--ppl-steps 200]

Speed: GPT-2 124M shape (random init; speed depends on shapes, not values): 50 decode steps after a 12-token
prefill per row, per candidate and batch size, the candidates taking turns for --rounds rounds; medians printed.
Perplexity: a 4 x 128 GPT-2 trained here on generated prose (synthetic_data/small_model.py), scored on held-out prose.
Batch change: the largest difference of one row's logits decoded alone and beside 7 other rows (0 keeps a seeded
request's text independent of its batch; float32's last-bit differences flip only near-ties).

  float32        the saved weights (the baseline)
  bfloat16       weights and activations in bf16 (oneDNN, AVX512-BF16 where the CPU has it)
  dynamic-int8   torch.ao quantize_dynamic on every linear layer (Conv1D converted to nn.Linear, head included):
                 fbgemm int8 with activations quantized per tensor
  weight-int8    int8 weights, bf16 activations (aten._weight_int8pack_mm, as gpt-fast uses on CPU)
  int8           ours (lm.int8_weights): int8 weights per channel, activations per row, exact int32 sums
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from aks_jobs.lm.int8_weights import quantize_linear_layers
from aks_jobs.lm.kv_forward import Gpt2CachedForward
from aks_jobs.lm.perplexity import score_texts
from aks_jobs.lm.serving_model import load_serving_model
from synthetic_data.prose import prose
from synthetic_data.small_model import train_small_model

warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao.quantization announces its move


def linear_layers(model: PreTrainedModel) -> PreTrainedModel:
    """Every Conv1D as an nn.Linear, and an untied nn.Linear head: what quantize_dynamic can convert."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                linear = nn.Linear(child.nx, child.nf)
                linear.weight.data, linear.bias.data = child.weight.data.t().contiguous(), child.bias.data
                setattr(parent, name, linear)
    head = nn.Linear(model.config.n_embd, model.config.vocab_size, bias=False)
    head.weight.data = model.lm_head.weight.data.clone()
    model.lm_head = head
    return model


class WeightOnlyInt8(nn.Module):
    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        scale = layer.weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        self.weight = torch.round(layer.weight / scale[:, None]).to(torch.int8)
        self.scale, self.bias = scale.bfloat16(), None if layer.bias is None else layer.bias.bfloat16()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, x.shape[-1]).bfloat16(), self.weight, self.scale)
        out = out if self.bias is None else out + self.bias
        return out.reshape(*x.shape[:-1], -1)


def weight_only_int8(model: PreTrainedModel) -> PreTrainedModel:
    linear_layers(model).bfloat16()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, WeightOnlyInt8(child))
    return model


def int8(model: PreTrainedModel) -> PreTrainedModel:
    quantize_linear_layers(model)
    return model


CANDIDATES: dict[str, Callable[[PreTrainedModel], PreTrainedModel]] = {
    "float32": lambda model: model,
    "bfloat16": lambda model: model.bfloat16(),
    "dynamic-int8": lambda model: torch.ao.quantization.quantize_dynamic(
        linear_layers(model), {nn.Linear}, dtype=torch.qint8
    ),
    "weight-int8": weight_only_int8,
    "int8": int8,
}


def gpt2_124m() -> PreTrainedModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50257, n_positions=1024, n_layer=12, n_embd=768, n_head=12)
    return GPT2LMHeadModel(config).eval().requires_grad_(False)


def fifty_steps(forward: Gpt2CachedForward, rows: int) -> float:
    forward.prefill(range(rows), [torch.arange(12) + slot for slot in range(rows)])
    tokens, positions = torch.zeros(rows, dtype=torch.long), torch.full((rows,), 12)
    started = time.perf_counter()
    for step in range(50):
        tokens = forward.step(tokens, positions + step).argmax(-1)
    return time.perf_counter() - started


def batch_difference(model: PreTrainedModel) -> float:
    """Largest change of one row's logits between decoding it alone and beside 7 other rows."""
    forward = Gpt2CachedForward(model, 8)
    forward.prefill(range(8), [torch.arange(10) + 1000 * slot for slot in range(8)])
    together = forward.step(torch.full((8,), 5), torch.full((8,), 10))[0]
    forward.prefill([0], [torch.arange(10)])
    alone = forward.step(torch.full((1,), 5), torch.full((1,), 10))[0]
    return float((together - alone).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ppl-steps", type=int, default=200)
    args = parser.parse_args()
    names, batches = args.candidates.split(","), [int(size) for size in args.batches.split(",")]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average {os.getloadavg()[0]:.2f}"
    )

    with tempfile.TemporaryDirectory() as temporary:
        trained = train_small_model(Path(temporary) / "trained", n_layer=4, n_embd=128, steps=args.ppl_steps)
        tokenizer = load_serving_model({"AZUREML_MODEL_DIR": str(trained), "SCORING_WEIGHTS": "float"}).tokenizer
        held_out = prose(seed=99, sentences=400).splitlines()
        ppl = {
            name: score_texts(
                CANDIDATES[name](AutoModelForCausalLM.from_pretrained(trained).eval()), tokenizer, held_out
            ).perplexity
            for name in names
        }

    forwards = {name: Gpt2CachedForward(CANDIDATES[name](gpt2_124m()), max(batches)) for name in names}
    batch_change = {name: batch_difference(forward.model) for name, forward in forwards.items()}
    for forward in forwards.values():  # warm-up
        fifty_steps(forward, 1)
    seconds: dict[tuple[str, int], list[float]] = {(name, rows): [] for name in names for rows in batches}
    for _ in range(args.rounds):
        for rows in batches:
            for name, forward in forwards.items():
                seconds[name, rows].append(fifty_steps(forward, rows))
    print(f"load average after {os.getloadavg()[0]:.2f}\n")

    header = "".join(f"{f'batch {rows}: s':>13}{'req/s':>7}" for rows in batches)
    print(f"{'candidate':<14}{header}{'perplexity':>12}{'vs float32':>11}{'batch change':>14}")
    for name in names:
        cells = "".join(
            f"{statistics.median(seconds[name, rows]):>13.2f}{rows / statistics.median(seconds[name, rows]):>7.1f}"
            for rows in batches
        )
        change = 100 * (ppl[name] / ppl[names[0]] - 1)
        print(f"{name:<14}{cells}{ppl[name]:>12.4f}{change:>+10.2f}%{batch_change[name]:>14.2g}")


if __name__ == "__main__":
    sys.exit(main())
