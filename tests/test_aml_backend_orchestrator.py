"""The real orchestrator (status table on Azurite) driving the aml backend against RecordingMLClient."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from function_app import run_states as rs
from function_app.backends.aml import AmlBackend
from function_app.orchestrator import Orchestrator
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.contract_samples import evaluation, score_response
from tests.control_env import make_env
from tests.fakes.recording_ml_client import RecordingMLClient

AML = {
    "aml_subscription_id": "00000000-0000-0000-0000-000000000000",
    "aml_resource_group": "rg-gpt2",
    "aml_workspace": "ws-gpt2",
    "aml_environment_image": "gpt2acr.azurecr.io/gpt2-pdf-jobs:7",
    "debounce_seconds": 0,
}
EVALUATION = evaluation(
    "promote",
    candidate=12.1,
    serving=30.4,
    reason="perplexity 12.1 < 30.4",
    registered={"name": "gpt2-pdf", "version": "3"},
)  # with the train summary it carries


def test_a_promoted_run_rolls_out_blue_green_on_the_aml_endpoint(azurite_connection):  # noqa: F811
    env = make_env(azurite_connection, **AML)
    fake = RecordingMLClient()
    fake.add_endpoint("gpt2-pdf")
    fake.add_deployment("gpt2-pdf-v1", "gpt2-pdf", "1")
    fake.add_deployment("gpt2-pdf-v2", "gpt2-pdf", "2", traffic=100)
    fake.register_model("gpt2-pdf", "2")
    orchestrator = Orchestrator(env.store, AmlBackend(env.settings, ml_client=fake), env.container, env.settings)
    now = datetime.now(UTC)

    def tick(state_after: str):
        nonlocal now
        now += timedelta(seconds=61)
        run = orchestrator.tick(now)
        assert run.state == state_after, (run.state, run.error, run.retry)
        return run

    env.upload("harbour.pdf", b"%PDF-1.4 harbour rules")
    job = tick(rs.SUBMITTED).job_id
    fake.script_job(job, "Running", {"preprocess": "Running"})
    tick(rs.PREPROCESSING)
    fake.script_job(job, "Running", {"preprocess": "Completed", "train": "Running"})
    tick(rs.TRAINING)
    fake.script_job(job, "Completed", {"train": "Completed", "evaluate": "Completed"})
    fake.set_output(fake.child_name(job, "evaluate"), "evaluation", {"evaluation.json": EVALUATION})
    assert tick(rs.DEPLOYING).deployment == "gpt2-pdf-v3"
    fake.set_deployment_state("gpt2-pdf-v3", "Succeeded")
    fake.respond("gpt2-pdf-v3", score_response(" closes at dusk."))
    run = tick(rs.DEPLOYED)

    assert fake.writes() == [
        "jobs.create_or_update",
        "online_deployments.begin_create_or_update",  # v3 beside v2 (serving) and v1 (its rollback target)
        "online_endpoints.invoke",  # smoke test as JSON
        "online_endpoints.invoke",  # and streamed
        "online_endpoints.begin_create_or_update",  # traffic: 100% to v3
        "online_deployments.begin_delete",  # only now v1, older than the new rollback target, goes
    ]
    assert fake.last("online_deployments.begin_delete").args["name"] == "gpt2-pdf-v1"
    assert fake.traffic() == {"gpt2-pdf-v3": 100}
    assert fake.deployment_names() == ["gpt2-pdf-v2", "gpt2-pdf-v3"]  # v2 stays for rollback
    serving = orchestrator.status()["serving_model"]
    assert (serving["version"], serving["deployment"], serving["rollback_deployment"]) == (
        "3",
        "gpt2-pdf-v3",
        "gpt2-pdf-v2",
    )
    assert orchestrator.status()["scoring_url"] == "https://aks.example/api/v1/endpoint/gpt2-pdf/score"
    assert run.metrics == EVALUATION["training"]  # the train summary, once
