"""A real cached forward whose decode steps wait for the test's go: tests decide what joins the batch when."""

from __future__ import annotations

import threading

from aks_jobs.lm.kv_forward import Gpt2CachedForward


class GatedForward:
    """The real cached forward, but each decode step waits for the test's go, and the rows of every step and
    the prompts prefilled are recorded: the test decides what joins when (no reliance on timing)."""

    def __init__(self, forward: Gpt2CachedForward, fail_prefill: str | None = None) -> None:
        self.forward = forward
        self.slots, self.context = forward.slots, forward.context
        self.vocab_size, self.device = forward.vocab_size, forward.device
        self.go = threading.Semaphore(0)
        self.step_rows: list[int] = []
        self.fail_prefill = fail_prefill
        self.prefills: list[int] = []  # prompts per prefill forward that ran
        self.fail_step = False

    def prefill(self, slots, prompts):
        if any(prompt.tolist() == self.fail_prefill for prompt in prompts):
            raise RuntimeError("this prompt breaks the model")
        self.prefills.append(len(prompts))
        return self.forward.prefill(slots, prompts)

    def copy_slot(self, source, target, length):
        self.forward.copy_slot(source, target, length)

    def step(self, tokens, positions):
        self.step_rows.append(tokens.shape[0])  # on entry: once counted, the step's rows are fixed
        assert self.go.acquire(timeout=60), "the test never let the step run"
        if self.fail_step:
            raise RuntimeError("the model broke mid-step")
        return self.forward.step(tokens, positions)

    def wait_for_steps(self, count: int) -> None:
        for _ in range(600):
            if len(self.step_rows) >= count:
                return
            threading.Event().wait(0.05)
        raise AssertionError(f"only {len(self.step_rows)} of {count} steps ran")
