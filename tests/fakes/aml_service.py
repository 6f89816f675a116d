"""What Azure ML does on its own while the control plane polls it, played on a RecordingMLClient.

The recording fake answers what a test scripted. Scenario tests drive the real orchestrator over many
timer ticks, so AmlService scripts the workspace moving on as the calls come in (the fake's `on_call`),
one step per look, deterministically:
- each new pipeline job follows the next JobPlan in `plans` (else `promoting()`), one stage further each
  time its status is read; once Completed, its evaluate step's output holds evaluation.json and a promoted
  candidate is registered as the model's next version, as evaluate does;
- a new endpoint is ready at its next read; a new deployment at its second read, unless it is in
  `failing_deployments` (then it fails to start);
- every deployment answers scoring requests with a generation, or with what `answers` holds for it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from function_app.backends.aml_pipeline import STEPS
from tests.contract_samples import evaluation, score_response
from tests.fakes.recording_ml_client import RecordingMLClient

QUEUED = ("NotStarted", {})
GENERATION = score_response(" what the documents say, in the model's words.")
# "training" is the train summary evaluate copies in (here one without a per-step loss log).
PROMOTION = evaluation("promote", candidate=12.5, serving=20.1, reason="perplexity 12.5 beats serving 20.1")
REJECTION = evaluation("reject", candidate=30.0, serving=12.5, reason="perplexity 30 is worse than 12.5")


@dataclass
class JobPlan:
    """How one pipeline job goes.

    stages: (job status, step statuses) as AML shows them at each look, the last one for good.
    evaluation: evaluate's evaluation.json once Completed; a "registered" entry without a version gets
    the model's next version.
    errors: the run-history error of each step that failed (or "pipeline").
    """

    stages: list[tuple[str, dict[str, str]]]
    evaluation: dict | None = None
    errors: dict[str, str] = field(default_factory=dict)


def _running_until(last: str) -> list[tuple[str, dict[str, str]]]:
    """One stage per step up to `last`: that step running, the ones before it completed."""
    steps = STEPS[: STEPS.index(last) + 1]
    return [("Running", {**{done: "Completed" for done in steps[:i]}, step: "Running"}) for i, step in enumerate(steps)]


def _completed(evaluation: dict) -> JobPlan:
    return JobPlan([QUEUED, *_running_until("evaluate"), ("Completed", dict.fromkeys(STEPS, "Completed"))], evaluation)


def promoting(version: str | None = None, model_name: str = "gpt2-pdf", **evaluation) -> JobPlan:
    """Every step in turn, then evaluate promotes the candidate and registers it (`evaluation` overrides)."""
    return _completed({**PROMOTION, "registered": {"name": model_name, "version": version}, **evaluation})


def rejecting(**evaluation) -> JobPlan:
    """Every step in turn, then the gate keeps the serving model (`evaluation` overrides)."""
    return _completed({**REJECTION, **evaluation})


def failing(step: str, error: str) -> JobPlan:
    """The steps before `step` complete, then `step` fails with `error`, and the job with it."""
    statuses = {**_running_until(step)[-1][1], step: "Failed"}
    return JobPlan([QUEUED, *_running_until(step), ("Failed", statuses)], errors={step: error})


class AmlService:
    def __init__(self, fake: RecordingMLClient) -> None:
        self.fake = fake
        self.plans: list[JobPlan] = []  # for the next pipeline jobs, in order; then promoting()
        self.answers: dict[str, str | Exception] = {}  # deployment -> its scoring response (or error)
        self.failing_deployments: set[str] = set()
        self._jobs: dict[str, tuple[JobPlan, int]] = {}  # job -> its plan, the stage shown
        self._evaluated: set[str] = set()
        self._deployment_reads: dict[str, int] = {}
        self._latest_version: dict[str, int] = {}
        fake.on_call = self._moves_on

    def _moves_on(self, operation: str, args: dict) -> None:
        if (
            operation == "jobs.get"
            and args["name"] in self.fake.job_names()
            and self.fake.job_status(args["name"]) != "Canceled"
        ):
            self._job_moves_on(args["name"])
        elif operation == "online_endpoints.get" and self.fake.endpoint_state() == "Creating":
            self.fake.set_endpoint_state("Succeeded")
        elif operation == "online_deployments.get" and self.fake.deployment_state(args["name"]) == "Creating":
            name = args["name"]
            self._deployment_reads[name] = self._deployment_reads.get(name, 0) + 1
            if self._deployment_reads[name] >= 2:
                self.fake.set_deployment_state(name, "Failed" if name in self.failing_deployments else "Succeeded")
        elif operation == "online_deployments.begin_create_or_update":
            name = args["deployment"]["name"]
            self.fake.respond(name, self.answers.get(name, GENERATION))

    def _job_moves_on(self, job: str) -> None:
        plan, stage = self._jobs.get(job) or (self.plans.pop(0) if self.plans else promoting(), -1)
        stage = min(stage + 1, len(plan.stages) - 1)
        self._jobs[job] = (plan, stage)
        status, steps = plan.stages[stage]
        if status == "Completed" and job not in self._evaluated:
            self._evaluate(job, plan)
        self.fake.script_job(job, status, steps, plan.errors if status == "Failed" else None)

    def _evaluate(self, job: str, plan: JobPlan) -> None:
        """What evaluate leaves behind: evaluation.json, and a promoted candidate registered."""
        self._evaluated.add(job)
        evaluation = copy.deepcopy(plan.evaluation or {})
        registered = evaluation.get("registered")
        if registered:
            name = registered["name"]
            version = str(registered["version"] or self._latest_version.get(name, 0) + 1)
            if version.isdigit():
                self._latest_version[name] = max(int(version), self._latest_version.get(name, 0))
            registered["version"] = version
            self.fake.register_model(name, version)
        self.fake.set_output(self.fake.child_name(job, "evaluate"), "evaluation", {"evaluation.json": evaluation})
