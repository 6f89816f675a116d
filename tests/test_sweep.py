"""The sweep's one definition (search space, Bandit rule) and the local sweep that runs it end to end."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import mlflow
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, AutoTokenizer

from aks_jobs.lm.perplexity import score_texts
from aks_jobs.lm.sweep import PRIMARY_METRIC, BanditRule, BestByInterval, SearchSpace
from aks_jobs.lm.sweep_trials import Trial, choose
from pipeline_contracts.train_summary import TrainSummary
from synthetic_data.prose import prose, write_snapshot

REPO = Path(__file__).resolve().parents[1]


# --- search space ---------------------------------------------------------------------------------


@given(st.integers(0, 2**32))
def test_samples_stay_within_the_bounds(seed: int) -> None:
    space = SearchSpace(
        learning_rate_min=1e-5,
        learning_rate_max=1e-3,
        epochs_min=2,
        epochs_max=5,
        warmup_ratio_min=0.05,
        warmup_ratio_max=0.2,
        weight_decay_min=0.01,
        weight_decay_max=0.1,
    )
    trial = space.sample(random.Random(seed))
    assert 1e-5 <= trial["learning_rate"] <= 1e-3
    assert trial["epochs"] in (2, 3, 4, 5) and isinstance(trial["epochs"], int)
    assert 0.05 <= trial["warmup_ratio"] <= 0.2 and 0.01 <= trial["weight_decay"] <= 0.1


def test_learning_rate_is_drawn_log_uniformly() -> None:
    space = SearchSpace(learning_rate_min=1e-6, learning_rate_max=1e-2)
    rng = random.Random(0)
    exponents = [math.log10(space.sample(rng)["learning_rate"]) for _ in range(4000)]
    below = sum(e < -4 for e in exponents) / len(exponents)  # half of the exponent range [-6, -2]
    assert 0.45 < below < 0.55


def test_same_seed_same_trials_and_fixed_bounds_give_that_value() -> None:
    space = SearchSpace(epochs_min=3, epochs_max=3, warmup_ratio_max=0.0, weight_decay_max=0.0)
    first = [space.sample(random.Random(7)) for _ in range(2)]
    assert first[0] == first[1]
    assert (first[0]["epochs"], first[0]["warmup_ratio"], first[0]["weight_decay"]) == (3, 0.0, 0.0)


def test_bad_bounds_name_the_setting() -> None:
    with pytest.raises(ValidationError, match="epochs_min .* is above epochs_max"):
        SearchSpace(epochs_min=5, epochs_max=2)
    with pytest.raises(ValidationError, match="learning_rate_min"):
        SearchSpace(learning_rate_min=0)


def test_presets_said_to_evaluate_every_epoch_are_the_recipes_and_the_apis() -> None:
    from aks_jobs.lm.recipe import hyperparameters
    from aks_jobs.lm.sweep import PRESETS_EVALUATING_EVERY_EPOCH
    from pipeline_contracts.api_requests import SWEEP_PRESETS, Preset

    evaluating = tuple(p for p in Preset.__args__ if hyperparameters(p, "pretrained", {}).best_epoch)
    assert PRESETS_EVALUATING_EVERY_EPOCH == evaluating == SWEEP_PRESETS  # the API refuses the same presets


def test_warmup_ratio_becomes_the_share_of_warmup_steps(tmp_path: Path) -> None:
    from aks_jobs.lm.execution_plan import ExecutionPlan
    from aks_jobs.lm.recipe import hyperparameters, training_arguments

    hp = hyperparameters("default", "offline", {"warmup_ratio": 0.1})
    args = training_arguments(
        hp,
        ExecutionPlan(micro_batch=1, grad_accum=1, compile=False, optimizer="adamw_torch"),
        tmp_path,
        train_blocks=8,
        world_size=1,
    )
    assert args.get_warmup_steps(200) == 20
    assert hyperparameters("default", "offline", {}).warmup_ratio == 0.0


# --- Bandit rule ------------------------------------------------------------------------------------


def test_bandit_slack_factor_and_amount_for_a_loss() -> None:
    by_factor = BanditRule(slack_factor=0.2)
    assert not by_factor.should_stop(1, 1.2, best=1.0)
    assert by_factor.should_stop(1, 1.21, best=1.0)
    by_amount = BanditRule(slack_factor=0, slack_amount=0.5)
    assert not by_amount.should_stop(1, 2.5, best=2.0) and by_amount.should_stop(1, 2.51, best=2.0)
    with pytest.raises(ValidationError, match="exactly one of slack_factor and slack_amount"):
        BanditRule(slack_factor=0.1, slack_amount=0.1)


def test_bandit_applies_at_multiples_of_the_interval_from_the_delay_on() -> None:
    # The policy applies at every multiple of evaluation_interval that is >= delay_evaluation
    # (azureml-train-core hyperdrive BanditPolicy docs; azure-ai-ml's BanditPolicy keeps the same fields).
    rule = BanditRule(slack_factor=0.1, evaluation_interval=2, delay_evaluation=3)
    assert [i for i in range(1, 11) if rule.applies_at(i)] == [4, 6, 8, 10]
    assert not rule.should_stop(3, 100.0, best=1.0)
    assert rule.should_stop(4, 100.0, best=1.0)


def test_a_diverged_trial_stops_and_the_first_trial_is_never_compared() -> None:
    rule = BanditRule()
    assert rule.should_stop(1, math.nan, best=None) and rule.should_stop(1, math.inf, best=3.0)
    assert not rule.should_stop(1, 1e9, best=None)


def test_best_by_interval_keeps_the_lowest_finite_value() -> None:
    best = BestByInterval()
    for interval, value in [(1, 5.0), (1, 4.0), (1, 6.0), (2, math.nan), (2, 3.0)]:
        best.report(interval, value)
    assert best.best == {1: 4.0, 2: 3.0}


def test_choice_prefers_finished_trials_over_stopped_ones() -> None:
    trials = [
        Trial(1, {}, stopped_early=True, dev_loss=1.0),
        Trial(2, {}, dev_loss=3.0),
        Trial(3, {}, dev_loss=2.0),
        Trial(4, {}, dev_loss=math.nan),
    ]
    assert choose(trials).number == 3
    assert (
        choose([Trial(1, {}, stopped_early=True, dev_loss=5.0), Trial(2, {}, stopped_early=True, dev_loss=4.0)]).number
        == 2
    )


# --- the local sweep end to end ---------------------------------------------------------------------

# Seed 82 draws learning rates 5.3e-3, 13.3 (absurd: diverges) and 6.1e-3 from this space; the test
# checks the draw itself, so a change of sampling shows here rather than as a puzzling result.
SEED = 82
SPACE = SearchSpace(
    learning_rate_min=1e-3, learning_rate_max=100, epochs_min=2, epochs_max=2, warmup_ratio_max=0, weight_decay_max=0
)
RULE = BanditRule(slack_factor=0.5)


def test_three_trial_sweep_stops_the_absurd_trial_and_keeps_the_best_model(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    rates = [SPACE.sample(rng)["learning_rate"] for _ in range(3)]
    assert rates[0] < 0.01 and rates[1] > 10 and rates[2] < 0.01
    data = tmp_path / "processed"
    write_snapshot(data, "20250101_000000", [prose(8, 60), prose(9, 60)])
    output = tmp_path / "model"
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "aks_jobs" / "train.py"),
            "--data",
            str(data),
            "--output",
            str(output),
            "--base-model",
            "offline",
            "--block-size",
            "64",
            "--grad-accum",
            "1",
            "--seed",
            str(SEED),
            "--experiment",
            "sweep",
            "--sweep-trials",
            "3",
            "--sweep-space",
            SPACE.model_dump_json(),
            "--sweep-rule",
            RULE.model_dump_json(),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
    )

    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output / "train_summary.json").read_text())
    # What evaluate, the backends and the UI read: the contract carries the sweep (it refused it before).
    assert TrainSummary.model_validate(summary).sweep.chosen_trial == summary["sweep"]["chosen_trial"]
    sweep = summary["sweep"]
    trials = sweep["trials"]
    assert [t["trial"] for t in trials] == [1, 2, 3]
    assert [t["settings"]["learning_rate"] for t in trials] == pytest.approx(rates)
    assert [t["stopped_early"] for t in trials] == [False, True, False]
    assert len(trials[1]["dev_losses"]) == 1 and [len(trials[i]["dev_losses"]) for i in (0, 2)] == [2, 2]
    finished = [t for t in trials if not t["stopped_early"]]
    best = min(finished, key=lambda t: t[PRIMARY_METRIC])
    assert sweep["chosen_trial"] == best["trial"]
    assert summary["hyperparameters"]["learning_rate"] == pytest.approx(best["settings"]["learning_rate"])
    assert summary["dev_loss"] == best[PRIMARY_METRIC]  # chosen on dev; test (heldout.json) stays unseen
    # The model written is that trial's: its test loss is the one its summary reports.
    heldout = json.loads((output / "heldout.json").read_text())["blocks"]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(output), AutoTokenizer.from_pretrained(output)
    assert score_texts(model, tokenizer, heldout).loss == pytest.approx(summary["eval_loss"], rel=1e-4)
    assert summary["eval_loss"] != summary["dev_loss"]

    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    parent = client.get_run(sweep["mlflow_run_id"])
    assert parent.data.params["sweep_trials"] == "3" and parent.data.params["bandit.slack_factor"] == "0.5"
    assert parent.data.metrics["chosen_trial"] == best["trial"]
    for trial in trials:
        child = client.get_run(trial["mlflow_run_id"])
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["stopped_early"] == str(trial["stopped_early"])
        assert float(child.data.params["learning_rate"]) == pytest.approx(trial["settings"]["learning_rate"])
        history = client.get_metric_history(child.info.run_id, PRIMARY_METRIC)
        assert [m.step for m in history] == list(range(1, len(trial["dev_losses"]) + 1))
        assert [m.value for m in history] == pytest.approx(trial["dev_losses"], nan_ok=True)


def test_a_sweep_without_per_epoch_evaluation_is_refused_naming_the_fix(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text(prose(1, 20))
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "aks_jobs" / "train.py"),
            "--data",
            str(tmp_path / "t.txt"),
            "--output",
            str(tmp_path / "m"),
            "--base-model",
            "offline",
            "--preset",
            "memorize",
            "--sweep-trials",
            "2",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"},
    )
    assert result.returncode == 2
    assert "--best-epoch" in result.stderr and not (tmp_path / "m").exists()


def test_sweep_settings_reach_train_py_through_the_local_pipeline(tmp_path: Path, monkeypatch) -> None:
    from aks_jobs.train import parse_args
    from function_app.settings import Settings
    from local_stack import components
    from local_stack.backend import LocalBackend
    from local_stack.pipeline_job import JobSpec

    settings = Settings(
        local_work_dir=str(tmp_path / "work"), train_epochs=2, sweep_trials=3, sweep_space=SPACE, sweep_rule=RULE
    )
    backend = LocalBackend(settings)
    monkeypatch.setattr(backend, "_spawn", lambda argv, log_path: {"pid": 0})  # the job itself: test above
    job = backend.submit("run1")

    spec = JobSpec.read(tmp_path / "work" / "jobs" / job)
    argv = components.load("train").argv({"processed": "/p", **spec.train_inputs}, {"model": "/m"})
    args = parse_args(argv[2:])
    assert (args.sweep_trials, args.sweep_space, args.sweep_rule) == (3, SPACE, RULE)
    # The time limit both backends apply: AML's sweep node gets it as `timeout` (test_aml_backend_sweep.py).
    assert args.sweep_timeout_s == settings.sweep().limits.timeout_s == settings.train_timeout_seconds > 0
    off = components.load("train").argv({"processed": "/p"}, {"model": "/m"})
    assert parse_args(off[2:]).sweep_trials == 0 and "--sweep-trials" not in off


# --- faults: trials that fail, diverge or are stopped, in any order ---------------------------------

OUTCOME = st.one_of(st.just("fail"), st.lists(st.one_of(st.floats(0.5, 20), st.just(math.nan)), min_size=1, max_size=4))


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    return uri


@given(outcomes=st.lists(OUTCOME, min_size=1, max_size=5), slack=st.floats(0.01, 1.0))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_mix_of_failed_stopped_and_finished_trials_keeps_the_best_finished_model(
    outcomes: list, slack: float, tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected between the sweep's steps: each trial fails, or reports these dev losses per epoch (the
    rule may stop it). The sweep fails only if every trial failed; else it writes exactly the chosen
    trial's files, records every trial, leaves no MLflow run open and no scratch behind."""
    from transformers import TrainerControl

    from aks_jobs.lm.sweep_trials import run_sweep
    from aks_jobs.lm.training import TrainRequest, checkpoint_dir

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    output = tmp_path / f"out-{uuid.uuid4().hex}"  # tmp_path is shared by the examples

    def fake_trial(request: TrainRequest) -> dict:
        number = int(request.run_name.removeprefix("trial-"))
        outcome = outcomes[number - 1]
        if outcome == "fail":
            raise RuntimeError(f"injected failure of trial {number}")
        control, evaluated = TrainerControl(), []
        for value in outcome:
            evaluated.append(value)
            for callback in request.callbacks:
                callback.on_evaluate(None, None, control, metrics={"eval_loss": value})
            if control.should_training_stop:
                break
        with mlflow.start_run(run_name=request.run_name, nested=True) as run:
            pass
        summary = {"dev_loss": min(evaluated), "mlflow_run_id": run.info.run_id, "trial": number}
        request.output.mkdir(parents=True)
        (request.output / "train_summary.json").write_text(json.dumps(summary))
        (request.output / "heldout.json").write_text(json.dumps({"trial": number}))
        return summary

    request = TrainRequest(data=tmp_path, output=output, experiment="faults")
    rule = BanditRule(slack_factor=slack)
    if all(outcome == "fail" for outcome in outcomes):
        with pytest.raises(RuntimeError, match="injected failure"):
            run_sweep(request, len(outcomes), SearchSpace(), rule, train_trial=fake_trial)
        assert not output.exists()
    else:
        summary = run_sweep(request, len(outcomes), SearchSpace(), rule, train_trial=fake_trial)
        trials = summary["sweep"]["trials"]
        assert len(trials) == len(outcomes)
        assert [t["error"] is not None for t in trials] == [o == "fail" for o in outcomes]
        best_at: dict[int, float] = {}  # the rule, restated: stop at the first epoch worse than the slack
        for trial, outcome in zip(trials, outcomes):
            if outcome == "fail":
                continue
            losses = trial["dev_losses"]
            assert losses == pytest.approx(outcome[: len(losses)], nan_ok=True)
            assert trial["stopped_early"] or len(losses) == len(outcome)
            for epoch, value in enumerate(losses, 1):
                worse = not math.isfinite(value) or (epoch in best_at and value > best_at[epoch] * (1 + slack))
                assert worse == (trial["stopped_early"] and epoch == len(losses))
            for epoch, value in enumerate(losses, 1):
                if math.isfinite(value):
                    best_at[epoch] = min(value, best_at.get(epoch, math.inf))
        finished = [
            t for t in trials if t["error"] is None and not t["stopped_early"] and math.isfinite(t[PRIMARY_METRIC])
        ]
        pool = finished or [t for t in trials if t["error"] is None]
        best = min(t[PRIMARY_METRIC] if math.isfinite(t[PRIMARY_METRIC]) else math.inf for t in pool)
        chosen = trials[summary["sweep"]["chosen_trial"] - 1]
        assert chosen in pool and (chosen[PRIMARY_METRIC] == best or not math.isfinite(best))
        assert json.loads((output / "heldout.json").read_text()) == {"trial": chosen["trial"]}
        assert json.loads((output / "train_summary.json").read_text())["trial"] == chosen["trial"]
    assert mlflow.active_run() is None
    assert not checkpoint_dir(output).with_name(f"sweep-{checkpoint_dir(output).name}").exists()


# --- the sweep's time limit (SweepClock), the rule Azure ML applies to its sweep node's timeout ------------

TRIAL_RUN = st.lists(st.floats(0.5, 20), min_size=1, max_size=3)  # seconds per epoch, one epoch each


@given(runs=st.lists(TRIAL_RUN, min_size=1, max_size=5), timeout=st.integers(1, 60))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_time_limit_starts_no_trial_after_it_stops_the_running_one_and_keeps_the_best_finished(
    runs: list, timeout: int, tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected clock: each trial's epochs take these seconds. Invariants: a trial starts only before the
    limit; one still running at the limit is stopped after that step, marked stopped by the time limit;
    the chosen model is the best finished trial's, else the best stopped one's."""
    from transformers import TrainerControl, TrainerState

    from aks_jobs.lm.sweep_trials import BY_TIME_LIMIT, run_sweep
    from aks_jobs.lm.training import TrainRequest

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    clock = [0.0]
    started_at: list[float] = []

    def timed_trial(request: TrainRequest) -> dict:
        number = int(request.run_name.removeprefix("trial-"))
        started_at.append(clock[0])
        control, state = TrainerControl(), TrainerState()
        losses = []
        for epoch, seconds in enumerate(runs[number - 1], 1):
            clock[0] += seconds
            state.global_step = epoch
            losses.append(10.0 / (number + epoch))  # later trials learn better: the limit must not favour them
            for callback in request.callbacks:
                callback.on_step_end(None, state, control)
                callback.on_evaluate(None, state, control, metrics={"eval_loss": losses[-1]})
            if control.should_training_stop:
                break
        with mlflow.start_run(run_name=request.run_name, nested=True) as run:
            pass
        request.output.mkdir(parents=True)
        summary = {"dev_loss": losses[-1], "mlflow_run_id": run.info.run_id, "trial": number}
        (request.output / "train_summary.json").write_text(json.dumps(summary))
        return summary

    request = TrainRequest(data=tmp_path, output=tmp_path / f"out-{uuid.uuid4().hex}", experiment="timeout")
    summary = run_sweep(
        request,
        len(runs),
        SearchSpace(),
        BanditRule(slack_factor=1e6),  # only the time limit stops trials here
        train_trial=timed_trial,
        timeout_s=timeout,
        now=lambda: clock[0],
    )

    sweep = summary["sweep"]
    trials = sweep["trials"]
    assert (sweep["planned_trials"], sweep["timeout_s"]) == (len(runs), timeout)
    assert all(start < timeout for start in started_at)  # none started at or after the limit
    assert len(trials) == len(runs) or clock[0] >= timeout  # the next trial did not start: the limit had passed
    for trial, start in zip(trials, started_at):
        epochs = runs[trial["trial"] - 1]
        ends = [start + sum(epochs[:i]) for i in range(1, len(epochs) + 1)]
        stop = next((i for i, end in enumerate(ends, 1) if end >= timeout), None)
        assert trial["stopped_early"] == (stop is not None)
        assert trial["stopped_by"] == (BY_TIME_LIMIT if trial["stopped_early"] else None)
        assert len(trial["dev_losses"]) == (stop or len(epochs))
    finished = [t for t in trials if not t["stopped_early"]]
    pool = finished or trials
    assert sweep["chosen_trial"] == min(pool, key=lambda t: t[PRIMARY_METRIC])["trial"]


def test_a_time_limited_sweep_on_a_tiny_corpus_stops_its_trial_and_says_none_finished(tmp_path: Path) -> None:
    """1 s: the first trial starts, is stopped after its first step, and no other starts; its model goes on."""
    data = tmp_path / "processed"
    write_snapshot(data, "20250101_000000", [prose(8, 60), prose(9, 60)])
    output = tmp_path / "model"
    argv = [sys.executable, str(REPO / "aks_jobs" / "train.py"), "--data", str(data), "--output", str(output)]
    argv += ["--base-model", "offline", "--block-size", "64", "--grad-accum", "1", "--epochs", "3"]
    argv += ["--sweep-trials", "3", "--sweep-space", SPACE.model_dump_json(), "--sweep-timeout-s", "1"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)

    assert result.returncode == 0, result.stderr[-3000:]
    summary = TrainSummary.model_validate_json((output / "train_summary.json").read_bytes())
    sweep = summary.sweep
    assert (sweep.planned_trials, sweep.timeout_s, len(sweep.trials)) == (3, 1, 1)
    (only,) = sweep.trials
    assert only.stopped_early and only.stopped_by == "the sweep's time limit" and sweep.chosen_trial == 1
    assert summary.epochs < 3  # stopped after the step during which the limit passed, before its plan's end
    assert "no sweep trial ran to its end" in result.stderr and "1 of 3 trials ran" in result.stderr


@pytest.mark.slow
def test_a_time_limited_sweep_under_ddp_ends_on_every_rank_together(tmp_path: Path) -> None:
    """Two CPU ranks (gloo): the ranks agree on the limit (an all-reduce), so neither waits for the other."""
    data = tmp_path / "processed"
    write_snapshot(data, "20250101_000000", [prose(8, 60), prose(9, 60)])
    output = tmp_path / "model"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    argv = [*torchrun, str(REPO / "aks_jobs" / "train.py"), "--data", str(data), "--output", str(output)]
    argv += ["--base-model", "offline", "--block-size", "64", "--grad-accum", "1", "--epochs", "3"]
    argv += ["--sweep-trials", "3", "--sweep-space", SPACE.model_dump_json(), "--sweep-timeout-s", "1"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)

    assert result.returncode == 0, result.stderr[-3000:]
    summary = TrainSummary.model_validate_json((output / "train_summary.json").read_bytes())
    assert summary.hyperparameters["world_size"] == 2
    assert len(summary.sweep.trials) == 1 and summary.sweep.trials[0].stopped_by == "the sweep's time limit"
