"""The language-model head + loss: Hugging Face's (all logits in float32) against ours (fused, in chunks).

    .venv/bin/python -m bench.loss_bench [--batch N] [--steps N]

One training step (forward + backward) of GPT-2 124M (random init, vocabulary padded to 50304 as the train
step pads it) on --batch blocks of 1024 tokens, each path in its own process so its peak memory is its own:
peak memory of the first step (GPU allocator; on CPU the process's peak resident size), seconds per step (best
of --steps), the loss, and how far the fused path's gradients are from Hugging Face's. bf16 autocast on GPU,
float32 on CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from aks_jobs.lm.execution_plan import pad_vocabulary
from aks_jobs.lm.fused_loss import fused_loss

BLOCK = 1024


def one_path(fused: bool, batch: int, steps: int, grads_file: Path) -> dict[str, object]:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    config = GPT2Config(attn_implementation="sdpa", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    pad_vocabulary(model)
    model.to(device).train()
    ids = torch.randint(0, config.vocab_size, (batch, BLOCK), generator=torch.Generator().manual_seed(1)).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    times = []
    with fused_loss(model) if fused else contextlib.nullcontext():
        for _ in range(steps):
            model.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            with autocast:
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
            if len(times) == 1:
                # The first step's: later steps on CPU add the allocator's retained heap, a few GB of noise.
                peak = (
                    torch.cuda.max_memory_allocated()
                    if cuda
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                )
    torch.save({name: p.grad.float().cpu() for name, p in model.named_parameters()}, grads_file)
    return {"seconds": min(times), "peak_bytes": peak, "loss": loss.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--batch", type=int, default=32 if torch.cuda.is_available() else 2, help="blocks of 1024 tokens per step"
    )
    parser.add_argument("--steps", type=int, default=5 if torch.cuda.is_available() else 2)
    parser.add_argument("--path", choices=("hf", "fused"), help=argparse.SUPPRESS)  # one path, in a child
    parser.add_argument("--grads", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.path:
        print(json.dumps(one_path(args.path == "fused", args.batch, args.steps, args.grads)))
        return

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"loss_bench {dt.date.today()}: {device}, torch {torch.__version__}; GPT-2 124M, {args.batch} x {BLOCK} "
        f"tokens, best of {args.steps} steps"
    )
    results, grads = {}, {}
    for path in ("hf", "fused"):
        grads_file = Path(f"/tmp/loss_bench_{path}.pt")
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--path",
                path,
                "--batch",
                str(args.batch),
                "--steps",
                str(args.steps),
                "--grads",
                str(grads_file),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        results[path] = json.loads(child.stdout.strip().splitlines()[-1])
        grads[path] = torch.load(grads_file)
        grads_file.unlink()
    worst = max(
        float((grads["fused"][name] - grad).abs().max() / grad.abs().max().clamp(min=1e-30))
        for name, grad in grads["hf"].items()
    )
    print("| path | peak memory | s per step | loss |")
    print("| --- | ---: | ---: | ---: |")
    for path, name in (("hf", "Hugging Face head + loss (float32 logits)"), ("fused", "ours: fused, chunked")):
        row = results[path]
        print(f"| {name} | {row['peak_bytes'] / 2**30:.2f} GiB | {row['seconds']:.3f} | {row['loss']:.4f} |")
    print(f"largest gradient difference, relative to that tensor's largest gradient: {worst:.1e}")


if __name__ == "__main__":
    main()
