"""The train step as an Azure ML sweep node, checked offline by azure-ai-ml itself (validate, REST body)."""

from __future__ import annotations

import math

import pytest

from aks_jobs.lm.sweep import GOAL, PRIMARY_METRIC, SWEPT, BanditRule, SearchSpace
from function_app.backends import aml_pipeline, aml_sweep
from function_app.settings import Settings, SettingsError

IMAGE = "gpt2acr.azurecr.io/gpt2-pdf-jobs:7"
SPACE = SearchSpace(
    learning_rate_min=2e-5,
    learning_rate_max=3e-4,
    epochs_min=2,
    epochs_max=4,
    warmup_ratio_min=0.0,
    warmup_ratio_max=0.15,
    weight_decay_min=0.0,
    weight_decay_max=0.05,
)
RULE = BanditRule(slack_factor=0.15, evaluation_interval=1, delay_evaluation=2)
SETTINGS = Settings(
    aml_subscription_id="00000000-0000-0000-0000-000000000000",
    aml_resource_group="rg-gpt2",
    aml_workspace="ws-gpt2",
    base_model="offline",
    train_epochs=9,
    sweep_trials=6,
    sweep_max_concurrent_trials=3,
    sweep_timeout_s=7200,
    sweep_space=SPACE,
    sweep_rule=RULE,
)
DS = "azureml://datastores/gpt2_training_data/paths"


@pytest.fixture(scope="module")
def job():
    return aml_pipeline.build_pipeline_job(SETTINGS, "20261123T101500Z", None)


@pytest.fixture(scope="module")
def rest_train(job) -> dict:
    return job._to_rest_object().as_dict()["properties"]["jobs"]["train"]


def test_pipeline_with_the_sweep_node_passes_azure_ml_validation(job):
    result = job._validate()
    assert result.passed, result.error_messages
    with_image = aml_pipeline.build_pipeline_job(Settings(aml_environment_image=IMAGE, sweep_trials=2), "r", None)
    assert with_image._validate().passed


def test_rest_body_has_random_sampling_the_bandit_policy_and_the_limits(rest_train):
    assert rest_train["type"] == "sweep" and rest_train["display_name"] == "train"
    assert rest_train["sampling_algorithm"] == "random"
    assert rest_train["objective"] == {"goal": GOAL, "primary_metric": PRIMARY_METRIC}
    assert rest_train["early_termination"] == {
        "policy_type": "Bandit",
        "slack_factor": 0.15,
        "evaluation_interval": 1,
        "delay_evaluation": 2,
    }
    # timeout: "the maximum run duration, in seconds, after which the job will be cancelled" (azure-ai-ml
    # entities/_job/job_limits.py SweepJobLimits); the local sweep applies the same SweepLimits.timeout_s
    # by sweep.SweepClock (tests/test_sweep.py).
    assert rest_train["limits"] == {"max_total_trials": 6, "max_concurrent_trials": 3, "timeout": 7200}
    assert rest_train["resources"] == {"instance_type": "gpu-t4"}


def test_search_space_is_the_one_definition(rest_train):
    space = rest_train["search_space"]
    assert set(space) == set(SWEPT)
    # LogUniform's min/max are the exponents ("Minimum value of the log of the distribution":
    # azure-ai-ml entities/_job/sweep/search_space.py LogUniform).
    assert space["learning_rate"]["type"] == "loguniform"
    assert math.exp(space["learning_rate"]["min_value"]) == pytest.approx(2e-5)
    assert math.exp(space["learning_rate"]["max_value"]) == pytest.approx(3e-4)
    assert space["epochs"] == {"type": "choice", "values": [2, 3, 4]}
    assert space["warmup_ratio"] == {"type": "uniform", "min_value": 0.0, "max_value": 0.15}
    assert space["weight_decay"] == {"type": "uniform", "min_value": 0.0, "max_value": 0.05}
    # TRAIN_EPOCHS=9 is not passed as well: the search space sets epochs per trial.
    assert not set(SWEPT) & set(rest_train["inputs"])


def test_every_swept_setting_reaches_the_trial_command(job):
    # A sweep node's job replaces ${{inputs.<name>}} with ${{search_space.<name>}} for each swept name
    # (azure-ai-ml entities/_builders/sweep.py Sweep._to_job): a name the command does not use is never set.
    command = job.jobs["train"]._to_job().trial.command
    for name in SWEPT:
        assert f"${{{{search_space.{name}}}}}" in command, name
    assert "--warmup-ratio ${{search_space.warmup_ratio}}" in command


def test_the_swept_command_node_leaves_the_pipeline_and_evaluate_reads_the_sweeps_model(job):
    # Command.sweep() marks the command node swept and PipelineComponent._process_jobs drops swept
    # command nodes (azure-ai-ml entities/_builders/command.py, entities/_component/pipeline_component.py).
    jobs = job._to_rest_object().as_dict()["properties"]["jobs"]
    assert list(jobs) == ["preprocess", "train", "evaluate"]
    # A sweep node's outputs are its best trial's (Azure ML docs, how-to-use-sweep-in-pipeline).
    assert jobs["evaluate"]["inputs"]["model"]["value"] == "${{parent.jobs.train.outputs.model}}"
    # Each trial writes its own folder (${{name}}: the trial job's), under runs/ where jobs may write.
    # azure-ai-ml sends the path as written; the service puts each job's run id in for ${{name}}
    # (azure-ai-ml entities/_builders/fl_scatter_gather.py _custom_fl_data_path: "a unique id for the run
    # (default: inject run id with ${{name}})"; operations/_data_operations.py appends /${{name}} to give
    # each import job its own folder). A sweep's trials are jobs of their own, each with its name.
    assert jobs["train"]["outputs"]["model"]["uri"] == f"{DS}/runs/20261123T101500Z/trials/${{{{name}}}}/model/"
    assert jobs["train"]["outputs"]["model"]["uri"].removeprefix(f"{DS}/").startswith(aml_pipeline.RUNS)


def test_the_image_override_reaches_the_trials():
    # Command.sweep() deep-copies the node's component as the trial and not the node's environment
    # (azure-ai-ml entities/_builders/command.py sweep()), so the image is set on the trial.
    job = aml_pipeline.build_pipeline_job(Settings(aml_environment_image=IMAGE, sweep_trials=2), "r", None)
    steps = job._to_dict()["jobs"]
    assert steps["train"]["trial"]["environment"]["image"] == IMAGE
    assert steps["preprocess"]["environment"]["image"] == IMAGE


def test_off_by_default_the_train_step_is_one_command():
    job = aml_pipeline.build_pipeline_job(Settings(train_epochs=2), "r", None)
    train = job._to_dict()["jobs"]["train"]
    assert train["type"] == "command" and train["inputs"]["epochs"] == 2
    assert train["outputs"]["model"]["path"] == f"{DS}/runs/r/model/"


def test_sweep_settings_are_checked_and_named():
    assert Settings().sweep() is None
    sweep = Settings.from_env({"SWEEP_TRIALS": "4", "SWEEP_SPACE": '{"epochs_max": 2}'}).sweep()
    assert sweep.space == SearchSpace(epochs_max=2) and sweep.rule == BanditRule()
    assert sweep.limits.timeout_s == Settings().train_timeout_seconds  # 0: the train step's deadline
    with pytest.raises(SettingsError, match="TRAIN_PRESET=default"):
        Settings.from_env({"SWEEP_TRIALS": "2", "TRAIN_PRESET": "memorize"})
    with pytest.raises(SettingsError, match="SWEEP_RULE=.*exactly one of slack_factor and slack_amount"):
        Settings.from_env({"SWEEP_TRIALS": "2", "SWEEP_RULE": '{"slack_factor": 0}'})
    with pytest.raises(SettingsError, match="SWEEP_MAX_CONCURRENT_TRIALS"):
        Settings.from_env({"SWEEP_MAX_CONCURRENT_TRIALS": "0"})


def test_bandit_policy_rest_object_carries_the_rules_fields():
    # BanditPolicy._to_rest_object keeps delay/interval/slack as given (azure-ai-ml
    # entities/_job/sweep/early_termination_policy.py).
    rest = aml_sweep.bandit_policy(BanditRule(slack_factor=0, slack_amount=0.3, evaluation_interval=2))
    assert (rest.slack_amount, rest.slack_factor, rest.evaluation_interval, rest.delay_evaluation) == (0.3, 0, 2, 0)
