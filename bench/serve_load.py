"""Scoring under hostile load: the real scoring server (azmlinfsrv + aks_jobs/score.py) for a fixed time, beside
the design's pipeline() per request measured in the same run.

    .venv/bin/python -m bench.serve_load [--model-size small|gpt2] [--clients 32] [--seconds 60] [--hostile 0.05]

Builds the model folder as bench/serve_bench.py does (GPT-2 architecture, random init, GPT-2-sized BPE trained
offline; --model-size gpt2 is the 124M model), then:
  design  transformers.pipeline("text-generation") in this process, --design-requests one at a time
  ours    --clients threads for --seconds, each sending request after request: valid ones (the design notebook's
          prompt and sampling, 50 new tokens, half of them streamed) and, with probability --hostile, one of:
          a lone surrogate, an 8 MiB prompt, a request at every maximum of this deployment, or a stream that the
          client drops after its first event.
Pass: zero 5xx answers, every valid request answered in full (200, all its tokens; a streamed one ending with
its done event), the server's memory (resident set, sampled every 0.5 s) bounded. Prints p50/p95 latency of the
valid requests as their clients saw them, requests/s, and the memory figures. Exits 1 when it does not pass.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import torch

from aks_jobs.lm.serving_limits import ServingLimits
from bench.serve_bench import NEW_TOKENS, PROMPT, SAMPLING, SIZES, build_model, design_generator, summary
from local_stack.scoring_server import running_scoring_server
from pipeline_contracts.scoring import parse_response, streamed_answer

EIGHT_MIB = "fox " * (2 * 1024 * 1024)


def hostile_requests(limits: ServingLimits) -> dict[str, dict]:
    prompts = max(1, limits.max_request_rows // limits.max_return_sequences)
    return {
        "lone surrogate": {"prompt": "Once upon \ud800 a time"},
        "8 MiB prompt": {"prompt": EIGHT_MIB},
        "maximum limits": {
            "prompt": [PROMPT] * prompts,
            "num_return_sequences": limits.max_return_sequences,
            "max_new_tokens": limits.max_new_tokens,
            "top_k": 0,
            "top_p": 1.0,
            "temperature": 2.0,
        },
        "dropped stream": {"prompt": PROMPT, "max_new_tokens": limits.max_new_tokens, "stream": True},
    }


class Record:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.failures: list[str] = []
        self.server_errors: list[str] = []

    def add(self, kind: str, status: int, latency: float | None = None, failure: str | None = None) -> None:
        with self.lock:
            self.statuses[f"{kind} {status}"] += 1
            if latency is not None:
                self.latencies.append(latency)
            if failure:
                self.failures.append(f"{kind}: {failure}")
            if status >= 500:
                self.server_errors.append(f"{kind}: HTTP {status}")


def valid(http: httpx.Client, seed: int, stream: bool, record: Record) -> None:
    body = {"prompt": PROMPT, "max_new_tokens": NEW_TOKENS, "seed": seed, "stream": stream, **SAMPLING}
    started = time.perf_counter()
    answer = http.post("/score", json=body)
    latency = time.perf_counter() - started
    kind = "valid streamed" if stream else "valid"
    if answer.status_code != 200:
        record.add(kind, answer.status_code, failure=f"HTTP {answer.status_code}: {answer.text[:200]}")
        return
    try:
        done = streamed_answer(answer.text)[1] if stream else parse_response(answer.content)
        made = done.usage.completion_tokens
    except ValueError as err:  # NoGeneration included
        record.add(kind, 200, failure=f"incomplete answer: {err}")
        return
    record.add(kind, 200, latency, None if made == NEW_TOKENS else f"{made} tokens, not {NEW_TOKENS}")


def hostile(http: httpx.Client, name: str, body: dict, record: Record) -> None:
    if name == "dropped stream":
        with http.stream("POST", "/score", json=body) as answer:
            next(answer.iter_lines())  # the first line of the first event, then the client goes away
        record.add(name, answer.status_code)
        return
    content = json.dumps(body).encode()  # lone surrogates go out as the valid JSON escape \ud800
    answer = http.post("/score", content=content, headers={"Content-Type": "application/json"})
    expected = 200 if name == "maximum limits" else 400
    record.add(
        name,
        answer.status_code,
        failure=None if answer.status_code == expected else f"HTTP {answer.status_code}, not {expected}",
    )


def client(
    base_url: str, until: float, hostile_share: float, hostiles: dict[str, dict], seed: int, record: Record
) -> None:
    draw = random.Random(seed)
    with httpx.Client(base_url=base_url, timeout=300) as http:
        while time.monotonic() < until:
            try:
                if draw.random() < hostile_share:
                    name = draw.choice(sorted(hostiles))
                    hostile(http, name, hostiles[name], record)
                else:
                    valid(http, draw.randrange(2**32), draw.random() < 0.5, record)
            except httpx.HTTPError as err:
                record.add("transport", 0, failure=repr(err))


def server_process(port: int) -> psutil.Process:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    raise RuntimeError(f"no process listens on port {port}")


def memory_mib(process: psutil.Process) -> float:
    """Resident memory of the server: the gunicorn master and its worker(s)."""
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-size", choices=sorted(SIZES), default="small")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hostile", type=float, default=0.05)
    parser.add_argument("--design-requests", type=int, default=10)
    args = parser.parse_args()

    print(
        f"date {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; {os.cpu_count()} CPUs "
        f"(shared with other work: load average {os.getloadavg()[0]:.2f}); torch {torch.__version__}; "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}"
    )
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / "model"
        parameters = build_model(folder, **SIZES[args.model_size])
        print(
            f"model GPT-2 {args.model_size} {json.dumps(SIZES[args.model_size])}, {parameters / 1e6:.0f}M parameters "
            f"(random init); valid request: {NEW_TOKENS} new tokens, {SAMPLING}"
        )

        design = design_generator(folder)
        design(0)  # warm-up
        latencies = []
        for i in range(args.design_requests):
            started = time.perf_counter()
            design(i)
            latencies.append(time.perf_counter() - started)
        design_figures = summary(latencies, sum(latencies))
        del design

        limits = ServingLimits.for_device("cuda" if torch.cuda.is_available() else "cpu")
        record, samples = Record(), []
        with running_scoring_server(folder) as base_url:
            server = server_process(int(base_url.rsplit(":", 1)[1]))
            httpx.post(base_url + "/score", json={"prompt": PROMPT, "max_new_tokens": 5}, timeout=120)  # warm-up
            idle_mib = memory_mib(server)
            until = time.monotonic() + args.seconds
            threads = [
                threading.Thread(
                    target=client, args=(base_url, until, args.hostile, hostile_requests(limits), i, record)
                )
                for i in range(args.clients)
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                samples.append(memory_mib(server))
                time.sleep(0.5)
            wall = time.perf_counter() - started
            health = httpx.get(base_url + "/", timeout=10).status_code
            after_mib = memory_mib(server)

    ours = summary(record.latencies, wall)
    print(f"\n{'path':<58} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8}")
    print(
        f"{'design: pipeline() per request, one at a time':<58} {design_figures['p50_ms']:>8.0f} "
        f"{design_figures['p95_ms']:>8.0f} {design_figures['req_s']:>8.2f}"
    )
    print(
        f"{f'ours: azmlinfsrv + score.py, {args.clients} clients, valid requests':<58} {ours['p50_ms']:>8.0f} "
        f"{ours['p95_ms']:>8.0f} {ours['req_s']:>8.2f}"
    )
    total = sum(record.statuses.values())
    print(
        f"\n{total} requests in {wall:.0f} s ({total / wall:.1f}/s in all): "
        + ", ".join(f"{key}: {count}" for key, count in sorted(record.statuses.items()))
    )
    print(
        f"server memory: {idle_mib:.0f} MiB after warm-up, at most {max(samples):.0f} MiB under load, "
        f"{after_mib:.0f} MiB after; health probe after the load: HTTP {health}"
    )
    print(f"5xx answers: {len(record.server_errors)}; failed valid requests: {len(record.failures)}")
    for failure in (record.server_errors + record.failures)[:10]:
        print("  ", failure)
    passed = not record.server_errors and not record.failures and health == 200
    print("PASS" if passed else "FAIL")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
