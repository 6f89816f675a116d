"""POST /api/retrain's body (TrainChoices): refused with a 400 naming the field and what is allowed, recorded on
the run, and submitted by both backends (the AML pipeline's train inputs, the local job's train command)."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi.testclient import TestClient

from aks_jobs.lm.recipe import PRESETS
from function_app import run_states as rs
from function_app.api import api
from local_stack import components as local_components
from local_stack.backend import LocalBackend
from local_stack.pipeline_job import JobSpec
from pipeline_contracts.api_requests import Preset, TrainChoices
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.control_env import ControlEnv, api_env  # noqa: F401 - fixture

KEY = {"x-functions-key": "s3cret"}


@pytest.fixture
def client(api_env: ControlEnv) -> TestClient:  # noqa: F811 - fixture
    api_env.upload("a.pdf", b"%PDF-1.4 a")
    return TestClient(api)


def _submitted_train_inputs(env: ControlEnv) -> dict:
    env.tick()  # the manual run is submitted on the next tick
    return env.azure.last("jobs.create_or_update").args["job"]["jobs"]["train"]


def test_the_presets_offered_are_the_recipes() -> None:
    assert Preset.__args__ == PRESETS


@pytest.mark.parametrize(
    "body, named",
    [
        (
            {"epochs": 0},
            "epochs=0 is refused (Input should be greater than 0); allowed: a number above 0 and at most 100",
        ),
        ({"epochs": 500}, "epochs=500 is refused (Input should be less than or equal to 100)"),
        (
            {"learning_rate": 1},
            "learning_rate=1 is refused (Input should be less than or equal to 0.01); allowed: a number",
        ),
        ({"learning_rate": "fast"}, "learning_rate='fast' is refused"),
        (
            {"preset": "huge"},
            "preset='huge' is refused (Input should be 'default' or 'memorize'); allowed: one of default",
        ),
        ({"base_model": ""}, "base_model='' is refused (String should have at least 1 character); allowed: a Hugging"),
        (
            {"sweep_trials": -1},
            "sweep_trials=-1 is refused (Input should be greater than or equal to 0); allowed: a whole",
        ),
        ({"sweep_trials": 3, "preset": "memorize"}, "sweep_trials=3 needs preset default (it evaluates every epoch)"),
        ({"epoch": 3}, "epoch=3 is refused (Extra inputs are not permitted); allowed: only preset, epochs"),
        ([1], "send a JSON object with any of preset, epochs, learning_rate, base_model, sweep_trials, or {}, not [1]"),
    ],
)
def test_a_bad_body_is_a_400_naming_the_field_and_what_is_allowed(client: TestClient, body, named: str) -> None:
    answer = client.post("/api/retrain", json=body, headers=KEY)
    assert answer.status_code == 400 and named in answer.json()["detail"], answer.json()
    assert client.get("/api/runs").json()["runs"] == []  # nothing started


def test_a_sweep_refused_by_the_app_preset_is_a_400(api_env: ControlEnv, client: TestClient, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setattr(
        api_env.orchestrator, "settings", api_env.settings.model_copy(update={"train_preset": "memorize"})
    )
    answer = client.post("/api/retrain", json={"sweep_trials": 2}, headers=KEY)
    assert answer.status_code == 400 and "SWEEP_TRIALS=2 needs a preset that evaluates every epoch" in answer.text


def test_the_runs_choices_are_recorded_and_reach_the_aml_train_step(api_env: ControlEnv, client: TestClient) -> None:  # noqa: F811
    body = {"preset": "memorize", "epochs": 2, "learning_rate": 3e-4, "base_model": "distilgpt2"}
    answer = client.post("/api/retrain", json=body, headers=KEY)
    assert answer.status_code == 202
    run = client.get(f"/api/runs/{answer.json()['run']}").json()
    assert run["train"] == {**body, "sweep_trials": 0}
    train = _submitted_train_inputs(api_env)["inputs"]
    assert (train["preset"], train["epochs"], train["learning_rate"], train["base_model"]) == (
        "memorize",
        2,
        3e-4,
        "distilgpt2",
    )
    assert api_env.store.get_run(run["id"]).state == rs.SUBMITTED


def test_sweep_trials_per_run_make_the_train_step_a_sweep(api_env: ControlEnv, client: TestClient) -> None:  # noqa: F811
    assert client.post("/api/retrain", json={"sweep_trials": 3}, headers=KEY).status_code == 202
    train = _submitted_train_inputs(api_env)
    assert train["type"] == "sweep" and train["limits"]["max_total_trials"] == 3


def test_an_empty_body_keeps_the_app_settings(api_env: ControlEnv, client: TestClient) -> None:  # noqa: F811
    answer = client.post("/api/retrain", headers=KEY)  # no body at all, as before
    assert answer.status_code == 202
    run = client.get(f"/api/runs/{answer.json()['run']}").json()
    assert run["train"] == {
        "preset": "default",
        "epochs": None,
        "learning_rate": None,
        "base_model": api_env.settings.base_model,
        "sweep_trials": 0,
    }
    train = _submitted_train_inputs(api_env)
    assert train["type"] == "command" and "epochs" not in train["inputs"] and "learning_rate" not in train["inputs"]


def test_the_local_backend_trains_with_the_runs_choices(tmp_path) -> None:
    from function_app.settings import Settings

    backend = LocalBackend(Settings(local_work_dir=str(tmp_path), train_epochs=1))
    backend._spawn = lambda argv, log_path: {"pid": 0}  # the job process itself is not what is tested here
    choices = TrainChoices(epochs=2.5, learning_rate=1e-4, preset="memorize", base_model="/models/tiny")
    spec = JobSpec.read(tmp_path / "jobs" / backend.submit("r1", choices))
    argv = local_components.load("train").argv({"processed": "/p", **spec.train_inputs}, {"model": "/m"})
    assert argv[argv.index("--epochs") + 1] == "2.5" and argv[argv.index("--learning-rate") + 1] == "0.0001"
    assert argv[argv.index("--preset") + 1] == "memorize" and argv[argv.index("--base-model") + 1] == "/models/tiny"
    default = JobSpec.read(tmp_path / "jobs" / backend.submit("r2"))
    assert default.train_inputs["epochs"] == 1 and default.train_inputs["learning_rate"] is None


def test_a_run_started_by_uploads_records_the_app_settings(api_env: ControlEnv) -> None:  # noqa: F811
    api_env.upload("a.pdf", b"%PDF-1.4 a")
    run = api_env.tick()
    assert run.trigger == "uploads" and run.train == {
        "preset": "default",
        "epochs": None,
        "learning_rate": None,
        "base_model": api_env.settings.base_model,
        "sweep_trials": 0,
    }


def test_an_app_preset_outside_the_recipes_is_named_at_load() -> None:
    from function_app.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match=r"TRAIN_PRESET='huge': Input should be 'default' or 'memorize'"):
        Settings.from_env({"TRAIN_PRESET": "huge"})


def test_get_retrain_says_what_a_run_with_no_choices_trains_with(
    api_env: ControlEnv,  # noqa: F811
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aks_jobs.lm.recipe import hyperparameters
    from function_app import services
    from pipeline_contracts.api_responses import PresetValues, RetrainDefaults

    def job_values(preset: str, kind: str) -> PresetValues:  # what train.py resolves for an unset field
        hp = hyperparameters(preset, kind, {})
        return PresetValues(epochs=hp.epochs, learning_rate=hp.learning_rate)

    answer = client.get("/api/retrain")
    assert answer.status_code == 200
    defaults = RetrainDefaults.model_validate(answer.json())
    assert (defaults.preset, defaults.base_model, defaults.sweep_trials) == ("default", "gpt2", 0)
    assert defaults.presets == {preset: job_values(preset, "pretrained") for preset in PRESETS}
    assert (defaults.epochs, defaults.learning_rate) == (3.0, 5e-5)  # the notebook's recipe

    svc = services.get()
    settings = svc.settings.model_copy(update={"base_model": "offline", "train_epochs": 7, "train_preset": "memorize"})
    monkeypatch.setattr(services, "get", lambda: dataclasses.replace(svc, settings=settings))
    offline = RetrainDefaults.model_validate(client.get("/api/retrain").json())
    # TRAIN_EPOCHS fixes the epochs whatever the preset; the offline base has its own learning rates.
    assert {p: v.epochs for p, v in offline.presets.items()} == dict.fromkeys(PRESETS, 7.0)
    assert offline.presets["default"].learning_rate == job_values("default", "offline").learning_rate == 1e-3
    assert (offline.preset, offline.epochs, offline.learning_rate) == ("memorize", 7.0, 1e-3)
