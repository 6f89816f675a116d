"""GPT-2's decode step replayed as CUDA graphs: one graph per row-count bucket, captured at start-up.

A decode step of GPT-2 124M is ~12 layers x a dozen small kernels; on a GPU their launches, not their maths,
set the step's time. A CUDA graph launches all of them at once. A graph has fixed shapes and addresses, so
the step runs over static input/output buffers, attends over the whole context (lm.kv_forward's
step_static: no host sync, no window that depends on the positions), and a batch of n rows is padded to the
smallest bucket >= n (powers of two up to the cache's slots) with idle slots fed token 0 at position 0, whose
answers are ignored as CachedForward.step allows.

All buckets are captured when the forward is built, not lazily on first use: capture takes a warm-up and
allocates from the graphs' memory pool, so doing it at start-up keeps that latency and memory out of the
first requests of each batch size and makes an out-of-memory show at start rather than mid-serving.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from aks_jobs.lm.kv_forward import Gpt2CachedForward

_WARMUP_STEPS = 3  # PyTorch's CUDA graph docs: run a few eager iterations on a side stream before capture


def row_buckets(slots: int) -> tuple[int, ...]:
    """The row counts a graph is captured for: powers of two below `slots`, then `slots` itself."""
    if slots < 1:
        raise ValueError(f"a cache of {slots} slots has no rows to decode")
    buckets = []
    size = 1
    while size < slots:
        buckets.append(size)
        size *= 2
    return (*buckets, slots)


def bucket_for(rows: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds `rows` rows."""
    for bucket in buckets:
        if bucket >= rows:
            return bucket
    raise ValueError(f"{rows} rows exceed the largest bucket ({buckets[-1]})")


class GraphedForward:
    """CachedForward whose step() pads the batch to a bucket and runs it over static buffers; with
    `capture=True` (CUDA only) each bucket's step is a replayed CUDA graph, otherwise the same padded
    step_static runs eagerly (what the CPU tests check the padding with)."""

    def __init__(self, forward: Gpt2CachedForward, *, capture: bool = True) -> None:
        self.forward = forward
        self.slots, self.context = forward.slots, forward.context
        self.vocab_size, self.device = forward.vocab_size, forward.device
        self.buckets = row_buckets(forward.slots)
        self._tokens = torch.zeros(forward.slots, dtype=torch.long, device=forward.device)
        self._positions = torch.zeros(forward.slots, dtype=torch.long, device=forward.device)
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._logits: dict[int, torch.Tensor] = {}  # each graph's static output
        if capture:
            self._capture()

    def prefill(self, slots: Sequence[int], prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.forward.prefill(slots, prompts)

    def copy_slot(self, source: int, target: int, length: int) -> None:
        self.forward.copy_slot(source, target, length)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """CachedForward.step; the logits returned are a view of a static buffer, valid until the next step."""
        rows = tokens.shape[0]
        bucket = bucket_for(rows, self.buckets)
        self._tokens[:rows].copy_(tokens, non_blocking=True)
        self._positions[:rows].copy_(positions, non_blocking=True)
        self._tokens[rows:bucket].zero_()
        self._positions[rows:bucket].zero_()
        if bucket in self._graphs:
            self._graphs[bucket].replay()
            return self._logits[bucket][:rows]
        return self.forward.step_static(self._tokens[:bucket], self._positions[:bucket])[:rows]

    @torch.inference_mode()
    def _capture(self) -> None:
        if self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {self.device}")
        # Warm-up on a side stream (kernel selection, workspace allocation), then capture. Idle steps write
        # only position 0 of the slots they feed, which a prefill overwrites before any row reads it.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for bucket in self.buckets:
                for _ in range(_WARMUP_STEPS):
                    self.forward.step_static(self._tokens[:bucket], self._positions[:bucket])
        torch.cuda.current_stream(self.device).wait_stream(side)
        # One memory pool for all buckets, largest first (the docs' advice for graphs replayed one at a time):
        # the smaller graphs reuse the largest one's intermediate memory.
        pool = torch.cuda.graph_pool_handle()
        for bucket in reversed(self.buckets):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self._logits[bucket] = self.forward.step_static(self._tokens[:bucket], self._positions[:bucket])
            self._graphs[bucket] = graph
        torch.cuda.synchronize(self.device)
