"""An Azure ML sweep's trials reach the run: each trial keeps its record beside its model, evaluate gathers
them into the SweepSummary (run row, UI, model card), and the pipeline job wires both ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aks_jobs import evaluate as evaluate_cli
from aks_jobs.lm.evaluation import EvaluateRequest, evaluate
from aks_jobs.lm.trial_record import STOPPED_BY_AZURE_ML, gather
from function_app import run_states as rs
from function_app.backends import aml_sweep
from function_app.backends.aml import AmlBackend
from function_app.run_states import JobState
from function_app.settings import Settings
from local_stack import components as local_components
from pipeline_contracts.api_requests import MAX_SWEEP_TRIALS
from pipeline_contracts.evaluation import Evaluation
from pipeline_contracts.train_summary import TRIAL_FILE, SweepSummary, TrainSummary, TrialRecord
from synthetic_data.prose import prose, write_snapshot
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.contract_samples import train_summary
from tests.control_env import make_env
from tests.fakes.aml_service import promoting
from tests.fakes.recording_ml_client import RecordingMLClient

REPO = Path(__file__).resolve().parents[1]
RUN = "20261123T101500Z"
DS = "azureml://datastores/gpt2_training_data/paths"
AML = Settings(
    aml_subscription_id="00000000-0000-0000-0000-000000000000",
    aml_resource_group="rg-gpt2",
    aml_workspace="ws-gpt2",
    sweep_trials=4,
)


def trial(data: Path, folder: Path, uri: str, *settings: str) -> subprocess.Popen:
    """train.py as Azure ML runs one sweep trial: sampled settings on the command line, --trial-record on."""
    argv = [sys.executable, str(REPO / "aks_jobs" / "train.py"), "--data", str(data), "--output", str(folder)]
    argv += ["--base-model", "offline", "--block-size", "64", "--grad-accum", "1", "--trial-record", "on", *settings]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def cancel_after_first_evaluation(process: subprocess.Popen, record: Path) -> None:
    """What Azure ML does to a trial its Bandit policy stops: SIGTERM while it trains."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if record.is_file() and TrialRecord.model_validate_json(record.read_bytes()).dev_losses:
            process.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    process.wait(timeout=60)
    assert process.returncode != 0, "the trial ended before it could be cancelled"


def test_trials_recorded_by_train_py_reach_evaluation_card_and_registry(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "processed"
    write_snapshot(data, "20250101_000000", [prose(8, 60), prose(9, 60)])
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    trials = tmp_path / "runs" / RUN / aml_sweep.TRIALS
    folders = {name: trials / name / "model" for name in ("sweep_0", "sweep_1", "sweep_2", "sweep_3")}

    for name, rate in (("sweep_0", "0.001"), ("sweep_1", "0.003")):
        done = trial(data, folders[name], uri, "--epochs", "2", "--learning-rate", rate, "--warmup-ratio", "0.05")
        assert done.wait(timeout=600) == 0, done.stderr.read()[-3000:]
    long = trial(data, folders["sweep_2"], uri, "--epochs", "60", "--learning-rate", "0.002")
    cancel_after_first_evaluation(long, folders["sweep_2"] / TRIAL_FILE)
    broken = trial(tmp_path / "no-such-snapshot", folders["sweep_3"], uri, "--epochs", "2", "--learning-rate", "0.01")
    assert broken.wait(timeout=300) == 2

    finished = {
        n: TrainSummary.model_validate_json((folders[n] / "train_summary.json").read_bytes())
        for n in (
            "sweep_0",
            "sweep_1",
        )
    }
    best = min(finished, key=lambda n: finished[n].dev_loss)  # the sweep node's output: its best trial's model
    evaluation = evaluate(
        EvaluateRequest(
            model=folders[best],
            output=tmp_path / "evaluation",
            trials=trials,
            sweep_limits=(4, 7200),
            model_name="swept",
        )
    )

    sweep = evaluation.training.sweep
    assert [t.trial for t in sweep.trials] == [1, 2, 3, 4]  # in the order they started
    assert (sweep.planned_trials, sweep.timeout_s) == (4, 7200)
    first, second, cancelled, failed = sweep.trials
    assert first.settings == {"learning_rate": 0.001, "epochs": 2.0, "warmup_ratio": 0.05}
    assert (first.dev_loss, second.dev_loss) == (finished["sweep_0"].dev_loss, finished["sweep_1"].dev_loss)
    assert [len(first.dev_losses), len(second.dev_losses)] == [2, 2] and not first.stopped_early
    assert first.mlflow_run_id == finished["sweep_0"].mlflow_run_id
    assert cancelled.stopped_early and cancelled.stopped_by == STOPPED_BY_AZURE_ML and cancelled.dev_loss is None
    assert 1 <= len(cancelled.dev_losses) < 60 and cancelled.error is None
    assert failed.error.startswith("CorpusError") and not failed.stopped_early and failed.dev_loss is None
    chosen = 1 if best == "sweep_0" else 2
    assert sweep.chosen_trial == chosen
    # evaluation.json carries it (the run row's metrics on Azure), the card names the choice.
    written = Evaluation.model_validate_json((tmp_path / "evaluation" / "evaluation.json").read_bytes())
    assert written.training.sweep == sweep
    assert evaluation.card.sweep_choice == {"chosen_trial": chosen, "trials": 4, **sweep.trials[chosen - 1].settings}
    tags = mlflow.MlflowClient().get_model_version("swept", evaluation.registered.version).tags
    assert tags["sweep_chosen_trial"] == str(chosen)


# --- faults: any mix of finished, cancelled, failed and unreadable trial records ----------------------

RECORD = st.sampled_from(["finished", "cancelled", "failed", "unreadable"])


@given(kinds=st.lists(RECORD, min_size=1, max_size=6), chosen=st.integers(0, 5))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_gather_numbers_every_readable_trial_and_names_the_chosen_one(kinds, chosen, tmp_path: Path) -> None:
    """Invariants: every readable record is one trial, numbered by start; an unreadable record never hides the
    others; the chosen trial is the one whose MLflow run wrote the model, and there is none when that model's
    record is missing (a summary never names a trial that did not go on)."""
    folder = tmp_path / f"trials-{time.monotonic_ns()}"
    for i, kind in enumerate(kinds):
        path = folder / f"job_{len(kinds) - i}" / "model" / TRIAL_FILE  # folder names not in start order
        path.parent.mkdir(parents=True)
        if kind == "unreadable":
            path.write_text('{"started_utc": "2026-11-30T10:00:0', encoding="utf-8")  # cut off by the cancel
            continue
        record = TrialRecord(
            started_utc=f"2026-11-30T10:00:{i:02d}+00:00",
            settings={"learning_rate": 0.001 * (i + 1)},
            dev_losses=[3.0 + i],
            finished=kind == "finished",
            dev_loss=3.0 + i if kind == "finished" else None,
            mlflow_run_id=f"run-{i}",
            error="RuntimeError: out of memory" if kind == "failed" else None,
        )
        path.write_text(record.model_dump_json(), encoding="utf-8")
    model = TrainSummary.model_validate(train_summary(mlflow_run_id=f"run-{chosen}"))

    sweep = gather(folder, model)

    readable = [(i, kind) for i, kind in enumerate(kinds) if kind != "unreadable"]
    if chosen >= len(kinds) or kinds[chosen] != "finished":
        assert sweep is None
        return
    assert [t.trial for t in sweep.trials] == list(range(1, len(readable) + 1))
    assert [t.mlflow_run_id for t in sweep.trials] == [f"run-{i}" for i, _ in readable]
    assert [t.stopped_early for t in sweep.trials] == [kind == "cancelled" for _, kind in readable]
    assert [t.error is not None for t in sweep.trials] == [kind == "failed" for _, kind in readable]
    assert sweep.trials[sweep.chosen_trial - 1].mlflow_run_id == f"run-{chosen}"


# --- the pipeline job and the control plane (RecordingMLClient) -------------------------------------


def test_the_pipeline_job_has_trials_record_and_evaluate_read_the_trials_folder() -> None:
    fake = RecordingMLClient()
    AmlBackend(AML, ml_client=fake).submit(RUN)

    jobs = fake.last("jobs.create_or_update").args["job"]["jobs"]
    assert jobs["train"]["inputs"]["trial_record"] == "on"
    trials = jobs["evaluate"]["inputs"]["trials"]
    assert trials["path"] == f"{DS}/runs/{RUN}/{aml_sweep.TRIALS}/" and trials["mode"] == "ro_mount"
    # Every trial's folder (trial.json beside its model) lies under the folder evaluate reads.
    assert jobs["train"]["outputs"]["model"]["path"].startswith(trials["path"])
    # evaluate's command gets them as evaluate.py reads them (the component bound as the local backend does).
    inputs = {**jobs["evaluate"]["inputs"], "model": "/mnt/model", "trials": "/mnt/trials"}
    inputs = {name: value for name, value in inputs.items() if name in local_components.load("evaluate").inputs}
    argv = local_components.load("evaluate").argv(inputs, {"evaluation": "/mnt/out"})
    args = evaluate_cli.parse_args(argv[2:])
    limits = AML.sweep().limits
    assert (args.trials, args.sweep_trials, args.sweep_timeout_s) == (
        Path("/mnt/trials"),
        limits.max_total_trials,
        limits.timeout_s,
    )
    unswept = RecordingMLClient()
    AmlBackend(Settings(**{**AML.model_dump(), "sweep_trials": 0}), ml_client=unswept).submit(RUN)
    plain = unswept.last("jobs.create_or_update").args["job"]["jobs"]
    assert "trials" not in plain["evaluate"]["inputs"] and "trial_record" not in plain["train"]["inputs"]


def test_a_completed_swept_job_reports_the_trials_evaluate_gathered() -> None:
    fake = RecordingMLClient()
    backend = AmlBackend(AML, ml_client=fake)
    job = backend.submit(RUN)
    trials = [
        {"trial": 1, "settings": {"learning_rate": 1e-4}, "dev_losses": [3.2, 3.0], "stopped_early": False},
        {"trial": 2, "settings": {"learning_rate": 3e-3}, "dev_losses": [9.9], "stopped_early": True},
    ]
    for t in trials:
        t.update(dev_loss=t["dev_losses"][-1] if not t["stopped_early"] else None, mlflow_run_id=None, error=None)
    sweep = {"primary_metric": "dev_loss", "goal": "minimize", "chosen_trial": 1, "mlflow_run_id": None}
    training = train_summary(sweep={**sweep, "trials": trials})
    fake.script_job(job, "Completed", dict.fromkeys(("preprocess", "train", "evaluate"), "Completed"))
    evaluation = {**json.loads(_evaluation_json()), "training": training}
    fake.set_output(fake.child_name(job, "evaluate"), "evaluation", {"evaluation.json": evaluation})

    status = backend.job_status(job)

    assert status.state == JobState.COMPLETED
    assert status.training.sweep.chosen_trial == 1
    assert [t.stopped_early for t in status.training.sweep.trials] == [False, True]
    assert fake.last("jobs.download").args["output_name"] == "evaluation"


def _evaluation_json() -> str:
    from tests.contract_samples import evaluation

    return json.dumps(evaluation("promote", registered={"name": "gpt2-pdf", "version": "1"}))


def test_the_largest_sweep_still_fits_the_run_row(azurite_connection: str) -> None:  # noqa: F811
    """50 trials of 12 epochs, failures with long messages, beside the longest loss curve and system series:
    the run still ends Deployed, its row keeps every trial with its settings, dev loss and end."""
    env = make_env(azurite_connection, debounce_seconds=0)
    trials = [
        {
            "trial": n,
            "settings": {"learning_rate": 1.234567e-4 * n, "epochs": 12, "warmup_ratio": 0.0123, "weight_decay": 0.05},
            "dev_losses": [3.0 + n / 1000 + e / 100 for e in range(12)],
            "stopped_early": n % 3 == 0,
            "stopped_by": STOPPED_BY_AZURE_ML if n % 3 == 0 else None,
            "dev_loss": 3.0 + n / 1000,
            "mlflow_run_id": f"{n:032x}",
            "error": ("OutOfMemoryError: CUDA out of memory. " * 30) if n % 7 == 0 else None,
        }
        for n in range(1, MAX_SWEEP_TRIALS + 1)
    ]
    sweep = {"primary_metric": "dev_loss", "goal": "minimize", "chosen_trial": 2, "mlflow_run_id": None}
    curve = [{"step": s, "loss": 3.123456789, "learning_rate": 1.23456e-4, "epoch": s / 7} for s in range(200)]
    samples = [{"s": float(i), "cpu_percent": 55.5, "memory_mb": 12345.6} for i in range(60)]
    training = train_summary(sweep={**sweep, "trials": trials}, log_history=curve, system_metrics=samples)
    env.aml.plans.append(promoting(training=training))
    env.upload("a.pdf", b"%PDF-1.4 a")

    run = env.settle(61)

    assert run.state == rs.DEPLOYED, (run.state, run.error)
    stored = SweepSummary.model_validate(env.store.get_run(run.id).metrics["sweep"])
    assert [t.trial for t in stored.trials] == list(range(1, MAX_SWEEP_TRIALS + 1))
    assert [(t.settings, t.dev_loss, t.stopped_early) for t in stored.trials] == [
        (t["settings"], t["dev_loss"], t["stopped_early"]) for t in trials
    ]
    assert all(t.error.startswith("OutOfMemoryError") for t in stored.trials if t.trial % 7 == 0)


def test_why_evaluate_gathers_trial_records_azure_ml_lists_child_jobs_without_settings_or_metrics() -> None:
    # jobs.list(parent_job_name=...) answers run-history children (azure-ai-ml operations/_job_operations.py
    # list -> operations/_run_operations.py get_run_children), each made by _BaseJob._load_from_rest
    # (entities/_job/base_job.py), which keeps name, status, tags and properties: no inputs (the sampled
    # settings) and no metrics (the dev losses). Hence each trial's own record.
    from azure.ai.ml._restclient.runhistory.models import Run
    from azure.ai.ml.entities._job.base_job import _BaseJob

    child = _BaseJob._load_from_rest(Run(run_id="gpt2-pdf-r-train_3", status="Canceled", properties={"k": "v"}))
    assert (child.name, child.status, child.properties) == ("gpt2-pdf-r-train_3", "Canceled", {"k": "v"})
    assert not hasattr(child, "inputs") and not hasattr(child, "metrics")
