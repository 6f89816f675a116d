"""One decode step, in-process: the model's forward alone and the decoder's whole step (sampling included), at
batch 1 and 32, eager beside CUDA graphs (lm.graphed_forward) when on CUDA. Run by bench.serve_bench, or alone:

    .venv/bin/python -m bench.decode_step_bench MODEL_FOLDER [--steps 50]

The model is loaded as the scoring server loads it (bf16 on CUDA, int8 linear layers on CPU) with its cache of
ServingLimits' max_rows slots (at least 32). Rows sample with the notebook's settings (temperature 0.7, top-k 50,
top-p 0.95).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from aks_jobs.lm.decoding import ContinuousDecoder, Row
from aks_jobs.lm.graphed_forward import GraphedForward
from aks_jobs.lm.kv_forward import CachedForward, Gpt2CachedForward
from aks_jobs.lm.serving_limits import ServingLimits
from aks_jobs.lm.serving_model import MODEL_DIR_ENV, load_serving_model

BATCHES = (1, 32)
PROMPT_TOKENS = 12


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ms_per_call(call: Callable[[], None], calls: int, device: torch.device) -> float:
    for _ in range(3):  # warm-up
        call()
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(calls):
        call()
    _synchronize(device)
    return 1000 * (time.perf_counter() - started) / calls


def forward_step(forward: CachedForward, rows: int) -> Callable[[], None]:
    """The forward alone: `rows` rows fed at a fixed position (the cache contents do not matter for timing)."""
    tokens = torch.zeros(rows, dtype=torch.long, device=forward.device)
    positions = torch.full((rows,), PROMPT_TOKENS, dtype=torch.long, device=forward.device)
    return lambda: forward.step(tokens, positions)


def decoder_steps(forward: CachedForward, rows: int, steps: int) -> Callable[[], None]:
    """`rows` sampled rows decoded to `steps` new tokens (prefill outside the timing is not possible here: it
    is one prefill per prompt, repeated prompts copied, a small part beside `steps` steps)."""

    def decode() -> None:
        decoder = ContinuousDecoder(forward, eos_token_ids=[])
        generator = torch.Generator().manual_seed(0)
        decoder.add(
            [
                Row(
                    list(range(1, PROMPT_TOKENS + 1)),
                    max_new_tokens=steps,
                    do_sample=True,
                    temperature=0.7,
                    top_k=50,
                    top_p=0.95,
                    uniforms=torch.rand(steps, generator=generator),
                )
                for _ in range(rows)
            ]
        )
        while decoder.running:
            decoder.step()

    return decode


def measure(folder: Path, steps: int) -> list[tuple[str, int, float, float]]:
    """(variant, rows, forward ms per step, decoder ms per step incl. sampling) per variant and batch."""
    served = load_serving_model({MODEL_DIR_ENV: str(folder)})
    device = served.model.device
    slots = max(ServingLimits.for_device(device.type).max_rows, *BATCHES)
    variants: dict[str, CachedForward] = {"eager": Gpt2CachedForward(served.model, slots)}
    if device.type == "cuda":
        try:  # a capture failure is a finding to print, and the eager figures still come
            variants["cuda graphs"] = GraphedForward(Gpt2CachedForward(served.model, slots))
        except RuntimeError as err:
            print(f"cuda graphs: capture failed: {err!r}")
    results = []
    for name, forward in variants.items():
        for rows in BATCHES:
            forward_ms = ms_per_call(forward_step(forward, rows), steps, device)
            decoder_ms = ms_per_call(decoder_steps(forward, rows, steps), 1, device) / steps
            results.append((name, rows, forward_ms, decoder_ms))
    del variants, served
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def print_table(results: list[tuple[str, int, float, float]]) -> None:
    print(f"\n{'decode step':<16} {'rows':>5} {'forward ms':>11} {'decoder ms':>11} {'tokens/s':>10}")
    for name, rows, forward_ms, decoder_ms in results:
        print(f"{name:<16} {rows:>5} {forward_ms:>11.2f} {decoder_ms:>11.2f} {rows * 1000 / decoder_ms:>10.0f}")
    print(
        "(decoder ms: a whole ContinuousDecoder step, sampling and the host's bookkeeping included, "
        "over a decode of the given tokens with prefill)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a model folder (save_pretrained output with its tokenizer)")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    print_table(measure(args.folder, args.steps))


if __name__ == "__main__":
    main()
