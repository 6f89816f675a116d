"""Serving: the real scoring server (azmlinfsrv + aks_jobs/score.py) under load, beside the design's pipeline().

    .venv/bin/python -m bench.serve_bench [--model-size gpt2|small] [--n-layer N] [--n-embd N]
                                          [--requests 64] [--latency-requests 10] [--clients 32]
                                          [--graphs auto|off|both] [--step-steps 50]

Builds one model folder (GPT-2 architecture, random init, 1024 positions, byte-level BPE of GPT-2's 50,257
tokens trained offline on generated words; --model-size gpt2 is the 124M model), then, on this machine in
one run, on CUDA when present:
  ours    azmlinfsrv with score.py (one worker, 32 threads, batched decoding) driven over HTTP
  design  transformers.pipeline("text-generation") on the same folder in this process, called once per
          request, one at a time, with the design notebook's arguments
first --latency-requests requests one at a time, the two paths taking turns (1 client; the design's req/s is
its serial throughput, as its server ran one request at a time), then --requests to ours from --clients
concurrent clients. --graphs both runs ours twice, SCORING_CUDA_GRAPHS=off then auto (CUDA graphs on a GPU), the
design path taking turns with each. Before the servers, bench.decode_step_bench prints ms per decode step at
batch 1 and 32, eager beside CUDA graphs on a GPU.
Every request is the notebook's prompt with its sampling settings (temperature 0.7, top-k 50, top-p 0.95) and
max_new_tokens=50. The model's generation config has no EOS, so both paths generate exactly 50 tokens (a random
model could otherwise stop early); ours reports its count in every answer and the bench checks it.
Latency is wall time per request as the client sees it (HTTP included for ours).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, pipeline

from aks_jobs.lm.base_model import train_tokenizer
from aks_jobs.lm.scoring_server_settings import THREADS, WORKER_COUNT
from bench import decode_step_bench
from local_stack.scoring_server import ScoringServerError, running_scoring_server

NEW_TOKENS = 50
PROMPT = "Based on the documents, who is Diogo Delgado Barros?"  # the design notebook's
SAMPLING = {"do_sample": True, "temperature": 0.7, "top_k": 50, "top_p": 0.95}  # the notebook's, our defaults
SIZES = {"gpt2": {"n_layer": 12, "n_embd": 768, "n_head": 12}, "small": {"n_layer": 4, "n_embd": 256, "n_head": 4}}
GPT2_VOCAB = 50257


def build_model(folder: Path, n_layer: int, n_embd: int, n_head: int) -> int:
    """save_pretrained a random GPT-2 with a GPT-2-sized byte-level BPE (random words give enough merges)."""
    words = random.Random(0)
    vocabulary = ["".join(words.choices("abcdefghijklmnopqrstuvwxyz", k=words.randint(3, 10))) for _ in range(40_000)]
    documents = [" ".join(vocabulary[i : i + 200]) for i in range(0, len(vocabulary), 200)] * 2  # every pair twice
    tokenizer = train_tokenizer(documents, vocab_size=GPT2_VOCAB)
    tokenizer.model_max_length = 1024
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=1024,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    model.generation_config.eos_token_id = None  # every generation runs its full 50 tokens, on both paths
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(parameter.numel() for parameter in model.parameters())


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * statistics.quantiles(ordered, n=20, method="inclusive")[18],
        "req_s": len(ordered) / wall,
    }


def timed(calls: int, clients: int, one: Callable[[int], None]) -> dict[str, float]:
    """Run one(i) for i < calls from `clients` threads; per-call latencies and overall throughput."""
    latencies: list[float] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        started = time.perf_counter()
        one(i)
        with lock:
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(call, range(calls)))
    return summary(latencies, time.perf_counter() - started)


def one_at_a_time(calls: int, paths: dict[str, Callable[[int], None]]) -> dict[str, dict[str, float]]:
    """Each path called `calls` times, one call at a time, the paths taking turns: load from other processes
    on a shared machine then hits them alike. Requests/s is calls over the path's own total time."""
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(calls):
        for name, one in paths.items():
            started = time.perf_counter()
            one(i)
            latencies[name].append(time.perf_counter() - started)
    return {name: summary(values, sum(values)) for name, values in latencies.items()}


def scoring_client(base_url: str) -> Callable[[int], None]:
    """POST one request per call (seed i), one keep-alive connection per client thread; checks the token count."""
    local = threading.local()

    def score(i: int) -> None:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=base_url, timeout=600)
        answer = local.http.post("/score", json={"prompt": PROMPT, "max_new_tokens": NEW_TOKENS, "seed": i, **SAMPLING})
        answer.raise_for_status()
        made = answer.json()["usage"]["completion_tokens"]
        assert made == NEW_TOKENS, f"generated {made} tokens, not {NEW_TOKENS}"

    return score


def design_generator(folder: Path) -> Callable[[int], None]:
    """The notebook's pipeline(): model in float32 (as Trainer leaves it), on GPU 0 when there is one."""
    generator = pipeline(
        "text-generation",
        model=AutoModelForCausalLM.from_pretrained(folder),
        tokenizer=AutoTokenizer.from_pretrained(folder),
        device=0 if torch.cuda.is_available() else -1,
    )
    # Its token count is checked once, outside the timing: the timed call returns text, as in the notebook.
    ids = generator(PROMPT, max_new_tokens=NEW_TOKENS, return_tensors=True, **SAMPLING)[0]["generated_token_ids"]
    made = len(ids) - len(generator.tokenizer(PROMPT)["input_ids"])
    assert made == NEW_TOKENS, f"design path generated {made} tokens, not {NEW_TOKENS}"

    def generate(i: int) -> None:
        generator(PROMPT, max_new_tokens=NEW_TOKENS, num_return_sequences=1, **SAMPLING)

    return generate


def run(folder: Path, graphs: str, latency_requests: int, requests: int, clients: int) -> dict[str, dict[str, float]]:
    """Ours per SCORING_CUDA_GRAPHS setting ("single <setting>", "loaded <setting>"), the design beside it."""
    design = design_generator(folder)
    figures: dict[str, dict[str, float]] = {}
    for setting in ("off", "auto") if graphs == "both" else (graphs,):
        # One setting failing (e.g. graph capture on a new GPU stack) still leaves the other's figures.
        try:
            with running_scoring_server(folder, env={"SCORING_CUDA_GRAPHS": setting}, startup_timeout_s=90) as base_url:
                paths = {"design": design, "single": scoring_client(base_url)}
                one_at_a_time(3, paths)  # warm-up
                turns = one_at_a_time(latency_requests, paths)
                figures.setdefault("design", turns["design"])
                figures[f"single {setting}"] = turns["single"]
                timed(clients, clients, paths["single"])  # warm-up at full batch
                figures[f"loaded {setting}"] = timed(requests, clients, paths["single"])
        except (ScoringServerError, httpx.HTTPError, AssertionError) as err:
            print(f"SCORING_CUDA_GRAPHS={setting}: failed: {err}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-size", choices=sorted(SIZES), default="gpt2")
    parser.add_argument("--n-layer", type=int, help="override the size's layers")
    parser.add_argument("--n-embd", type=int, help="override the size's width (heads stay 64 wide)")
    parser.add_argument("--requests", type=int, default=64, help="requests at --clients concurrency")
    parser.add_argument("--latency-requests", type=int, default=10, help="requests one at a time, per path")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--graphs",
        choices=["auto", "off", "both"],
        default="auto",
        help="SCORING_CUDA_GRAPHS for ours; both: off, then auto",
    )
    parser.add_argument("--step-steps", type=int, default=50, help="decode steps per microbenchmark figure")
    args = parser.parse_args()
    shape = dict(SIZES[args.model_size])
    shape["n_layer"] = args.n_layer or shape["n_layer"]
    if args.n_embd:
        shape.update(n_embd=args.n_embd, n_head=max(1, args.n_embd // 64))

    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or 'cpu'}, {torch.get_num_threads()} threads)"
    )
    print(
        f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; device {device}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / "model"
        parameters = build_model(folder, **shape)
        print(
            f"model GPT-2 {json.dumps(shape)}, vocab {GPT2_VOCAB}, {parameters / 1e6:.0f}M parameters (random init); "
            f"prompt {PROMPT!r}, {NEW_TOKENS} new tokens, {SAMPLING}; server {WORKER_COUNT} worker x {THREADS} "
            f"threads; {args.latency_requests} requests at 1 client, {args.requests} at {args.clients} clients"
        )
        load = os.getloadavg()[0]
        decode_step_bench.print_table(decode_step_bench.measure(folder, args.step_steps))
        figures = run(folder, args.graphs, args.latency_requests, args.requests, args.clients)
    print(
        f"load average (1 min) before {load:.2f}, after {os.getloadavg()[0]:.2f} "
        f"(other processes on this machine skew the figures)"
    )

    if "design" not in figures:
        raise SystemExit("no serving figures: every setting failed (see above)")
    design = figures["design"]
    print(f"\n{'path':<64} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8}")
    rows = [("design: pipeline() per request, one at a time", design)]
    settings = [name.removeprefix("single ") for name in figures if name.startswith("single ")]
    for setting in settings:
        rows += [
            (f"ours: azmlinfsrv + score.py, graphs {setting}, 1 client", figures[f"single {setting}"]),
            (f"ours: azmlinfsrv + score.py, graphs {setting}, {args.clients} clients", figures[f"loaded {setting}"]),
        ]
    for label, row in rows:
        print(f"{label:<64} {row['p50_ms']:>8.0f} {row['p95_ms']:>8.0f} {row['req_s']:>8.2f}")
    for setting in settings:
        single, loaded = figures[f"single {setting}"], figures[f"loaded {setting}"]
        print(
            f"graphs {setting}: 1 client p50 {design['p50_ms'] / single['p50_ms']:.2f}x lower than the design's; "
            f"{args.clients} clients: {loaded['req_s'] / design['req_s']:.1f}x the design's requests/s "
            f"(p95 {loaded['p95_ms']:.0f} ms)"
        )


if __name__ == "__main__":
    main()
