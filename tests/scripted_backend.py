"""An in-process PipelineBackend for the orchestration tests: the control-plane boundary.

It plays the compute side from a script (job states per call, errors to raise) and records every
call the orchestrator makes, so tests can assert what would have been sent. The end-to-end test
drives the real local backend instead.
"""
from __future__ import annotations

from dataclasses import replace

from function_app.backends.base import Deployment, JobStatus, PipelineBackend


class ScriptedBackend(PipelineBackend):
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.submit_errors: list[Exception] = []  # raised by the next submit() calls, in order
        # What job_status() answers for each new job, one entry per call (the last one repeats).
        self.job_script: list[JobStatus] = promoting_job("1")
        self.scripts: dict[str, list[JobStatus]] = {}
        self.deps: dict[str, Deployment] = {}
        self.ready_after = 1  # deployment() calls answering Creating before Ready
        self.polls: dict[str, int] = {}
        self.smoke_error: Exception | None = None

    def _call(self, *call) -> None:
        self.calls.append(call)

    def submit(self, run_id: str) -> str:
        self._call("submit", run_id)
        if self.submit_errors:
            raise self.submit_errors.pop(0)
        job_id = f"job-{run_id}"
        self.scripts[job_id] = list(self.job_script)
        return job_id

    def job_status(self, job_id: str) -> JobStatus:
        self._call("job_status", job_id)
        script = self.scripts[job_id]
        return script.pop(0) if len(script) > 1 else script[0]

    def begin_deploy(self, run_id: str, model_name: str, model_version: str) -> Deployment:
        self._call("begin_deploy", run_id, model_name, model_version)
        name = f"v{model_version}"
        self.deps[name] = Deployment(name, model_name, model_version, f"http://scripted/{name}/score")
        self.polls[name] = 0
        return self.deps[name]

    def deployment(self, name: str) -> Deployment:
        self._call("deployment", name)
        self.polls[name] += 1
        if self.polls[name] > self.ready_after and self.deps[name].state == "Creating":
            self.deps[name] = replace(self.deps[name], state="Ready")
        return self.deps[name]

    def smoke_test(self, name: str, prompt: str) -> str:
        self._call("smoke_test", name, prompt)
        if self.smoke_error:
            raise self.smoke_error
        return f"{prompt} something from {name}"

    def shift_traffic(self, name: str) -> None:
        self._call("shift_traffic", name)
        for other in self.deps:
            self.deps[other] = replace(self.deps[other], traffic=100 if other == name else 0)

    def delete_deployment(self, name: str) -> None:
        self._call("delete_deployment", name)
        del self.deps[name]

    def deployments(self) -> list[Deployment]:
        return list(self.deps.values())

    def scoring_url(self) -> str | None:
        return "http://scripted/score" if any(d.traffic for d in self.deps.values()) else None

    def serving(self) -> str | None:
        return next((d.name for d in self.deps.values() if d.traffic == 100), None)


def promoting_job(version: str) -> list[JobStatus]:
    return [
        JobStatus("Submitted"),
        JobStatus("Preprocessing"),
        JobStatus("Training"),
        JobStatus("Evaluating", metrics={"perplexity": 12.5}),
        JobStatus(
            "Completed",
            metrics={"perplexity": 12.5},
            evaluation={
                "decision": "promote",
                "reason": "perplexity 12.5 beats serving 20.1",
                "registered": {"name": "gpt2-pdf", "version": version},
            },
        ),
    ]


def rejecting_job() -> list[JobStatus]:
    return promoting_job("x")[:-1] + [
        JobStatus("Completed", evaluation={"decision": "reject", "reason": "perplexity 30 is worse than 12.5", "registered": None})
    ]


def failing_job(error: str) -> list[JobStatus]:
    return [JobStatus("Submitted"), JobStatus("Preprocessing"), JobStatus("Failed", error=error)]
