"""CPU serving: int8 weights (the CPU default) beside float32 (SCORING_WEIGHTS=float), both through the real azmlinfsrv.

    .venv/bin/python -m bench.cpu_serve_bench [--rounds 3] [--latency-requests 5] [--requests 64] [--clients 32]
                                              [--server-env KEY=VALUE ...] [--ppl-steps 200]

Speed: one GPT-2 124M folder (random init, vocabulary 50257, no EOS so every answer is 50 tokens; see
serve_bench.build_model), served twice at once by azmlinfsrv + score.py, once per weights setting. Each round
sends --latency-requests greedy 50-token requests one at a time to each server in turn (1 client), then
--requests from --clients concurrent clients to one server and then the other. p50/p95 are over every request of
every round; requests/s is the median of the rounds. Only one server works at a time, so the two see the same
machine; other processes on it skew both (the load average is printed).

Perplexity: speed does not depend on the weights' values, but the cost of int8 does, so a small GPT-2 is trained
here on generated prose (synthetic_data/small_model.py) and scored on held-out prose of the same generator by the
served model, loaded both ways as score.py loads it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import torch

from aks_jobs.lm.perplexity import score_texts
from aks_jobs.lm.serving_model import load_serving_model
from bench.serve_bench import NEW_TOKENS, PROMPT, build_model, summary, timed
from local_stack.scoring_server import running_scoring_server
from synthetic_data.prose import prose
from synthetic_data.small_model import train_small_model

WEIGHTS = {"float32": "float", "int8": "int8"}  # label -> SCORING_WEIGHTS
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")


def greedy_client(base_url: str, weights: str) -> Callable[[int], None]:
    """POST one greedy 50-token request per call, one keep-alive connection per client thread; checks the answer."""
    local = threading.local()

    def score(i: int) -> None:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=base_url, timeout=600)
        answer = local.http.post(
            "/score", json={"prompt": f"{PROMPT} ({i})", "max_new_tokens": NEW_TOKENS, "do_sample": False}
        )
        answer.raise_for_status()
        body = answer.json()
        assert body["usage"]["completion_tokens"] == NEW_TOKENS, body["usage"]
        assert body["model"]["weights"] == weights, body["model"]

    return score


def speed(
    folder: Path, rounds: int, latency_requests: int, requests: int, clients: int, server_env: dict[str, str]
) -> dict[str, dict[str, float]]:
    with (
        running_scoring_server(folder, env={**server_env, "SCORING_WEIGHTS": "float"}) as float_url,
        running_scoring_server(folder, env={**server_env, "SCORING_WEIGHTS": "int8"}) as int8_url,
    ):
        paths = {"float32": greedy_client(float_url, "float32"), "int8": greedy_client(int8_url, "int8")}
        single: dict[str, list[float]] = {name: [] for name in paths}
        loaded: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        for one in paths.values():  # warm-up
            one(0)
            timed(clients, clients, one)
        for _ in range(rounds):
            for i in range(latency_requests):
                for name, one in paths.items():  # taking turns, one request at a time
                    started = time.perf_counter()
                    one(i)
                    single[name].append(time.perf_counter() - started)
            for name, one in paths.items():
                loaded[name].append(timed(requests, clients, one))
    return {
        name: {
            **{f"single_{key}": value for key, value in summary(single[name], sum(single[name])).items()},
            "loaded_req_s": statistics.median(figures["req_s"] for figures in loaded[name]),
            "loaded_req_s_all": [round(figures["req_s"], 2) for figures in loaded[name]],
            "loaded_p50_ms": statistics.median(figures["p50_ms"] for figures in loaded[name]),
        }
        for name in paths
    }


def perplexity(steps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as temporary:
        folder = train_small_model(Path(temporary) / "trained", n_layer=4, n_embd=128, steps=steps)
        held_out = prose(seed=99, sentences=400).splitlines()
        return {name: score_texts(*_loaded(folder, setting), held_out).perplexity for name, setting in WEIGHTS.items()}


def _loaded(folder: Path, setting: str):
    served = load_serving_model({"AZUREML_MODEL_DIR": str(folder), "SCORING_WEIGHTS": setting})
    return served.model, served.tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-requests", type=int, default=5, help="per round and server, one at a time")
    parser.add_argument("--requests", type=int, default=64, help="per round and server, from --clients clients")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for both servers, e.g. OMP_NUM_THREADS=1",
    )
    parser.add_argument("--ppl-steps", type=int, default=200, help="training steps of the perplexity model")
    args = parser.parse_args()
    server_env = dict(item.split("=", 1) for item in args.server_env)

    threads = {name: os.environ.get(name, "unset") for name in THREAD_VARIABLES} | server_env
    print(
        f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; CPU {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads; "
        f"servers' thread environment {threads}"
    )
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / "model"
        parameters = build_model(folder, n_layer=12, n_embd=768, n_head=12)
        print(
            f"model GPT-2 124M shape ({parameters / 1e6:.0f}M parameters, random init); {NEW_TOKENS} greedy new "
            f"tokens; {args.rounds} rounds of {args.latency_requests} requests at 1 client and {args.requests} at "
            f"{args.clients} clients, per server"
        )
        load = os.getloadavg()[0]
        figures = speed(folder, args.rounds, args.latency_requests, args.requests, args.clients, server_env)
        print(
            f"load average (1 min) before {load:.2f}, after {os.getloadavg()[0]:.2f} "
            f"(other processes on this machine slow both paths)"
        )
    base, ours = figures["float32"], figures["int8"]
    print(
        f"\n{'weights':<10} {'1 client p50 ms':>16} {'p95 ms':>8} {f'{args.clients} clients req/s':>18} "
        f"{'(per round)':>22}"
    )
    for name, row in figures.items():
        print(
            f"{name:<10} {row['single_p50_ms']:>16.0f} {row['single_p95_ms']:>8.0f} {row['loaded_req_s']:>18.2f} "
            f"{str(row['loaded_req_s_all']):>22}"
        )
    print(
        f"int8: 1 client p50 {base['single_p50_ms'] / ours['single_p50_ms']:.2f}x lower, {args.clients} clients "
        f"{ours['loaded_req_s'] / base['loaded_req_s']:.2f}x the requests/s",
        flush=True,
    )

    ppl = perplexity(args.ppl_steps)
    print(
        f"\nheld-out perplexity (trained 4 x 128 GPT-2, {args.ppl_steps} steps): float32 {ppl['float32']:.4f}, "
        f"int8 {ppl['int8']:.4f} ({100 * (ppl['int8'] / ppl['float32'] - 1):+.2f}%)"
    )


if __name__ == "__main__":
    sys.exit(main())
