"""Knowledge Base page (Streamlit AppTest) against the real control plane API on Azurite: each status
state, the documents and run tables, the loss curve, uploads, retrain, and the API being down."""

from __future__ import annotations

from pathlib import Path

import pyarrow.ipc
import pytest
from azure.storage.blob import ContainerClient
from streamlit.testing.v1 import AppTest

from local_stack.processes import free_port
from synthetic_data.pdfs import make_text_pdf
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.contract_samples import manifest, model_card, train_summary
from tests.fakes.aml_service import JobPlan, failing, promoting, rejecting
from tests.ui_control_plane import ControlPlane, control_plane  # noqa: F401 - fixture
from tests.ui_markdown import plain

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")
SCORING_URL = "https://aks.example/api/v1/endpoint/gpt2-pdf/score"  # the recording fake's endpoint


@pytest.fixture
def page(
    control_plane: ControlPlane,
    azurite_connection: str,  # noqa: F811 - fixtures
    monkeypatch: pytest.MonkeyPatch,
) -> AppTest:
    monkeypatch.setenv("API_BASE_URL", control_plane.url)
    monkeypatch.setenv("DataStorage", azurite_connection)
    monkeypatch.setenv("DATA_CONTAINER", control_plane.env.settings.data_container)
    return AppTest.from_file(APP, default_timeout=30)


@pytest.fixture(scope="module")
def pdf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("pdf") / "archive.pdf"
    return make_text_pdf(path, ["Declaration: the archive opens at nine."]).read_bytes()


def _texts(at: AppTest, kind: str) -> list[str]:
    return [plain(element.value) for element in at.get(kind)]


def _plotted(chart) -> list[tuple]:
    """(series, x, y) of a Streamlit line chart, sorted."""
    frame = pyarrow.ipc.open_stream(chart.proto.datasets[0].data.data).read_pandas().dropna()
    return sorted((series, round(x), round(y, 3)) for x, series, y in frame.iloc[:, :3].itertuples(index=False))


def _table(at: AppTest, first_column: str):
    return next(df.value for df in at.dataframe if df.value.columns[0] == first_column)


def test_idle_before_any_upload(page: AppTest) -> None:
    page.run()
    assert not page.exception
    status, documents, runs = _texts(page, "info")
    assert status == "**Idle**\n\nNo model deployed yet: upload PDFs to train the first one."
    assert documents.startswith("No document recorded yet.") and runs.startswith("No run yet.")
    assert not page.error


def test_training_in_progress_shows_the_step_and_elapsed_time(
    page: AppTest, control_plane: ControlPlane, pdf: bytes
) -> None:
    control_plane.env.aml.plans.append(JobPlan(promoting().stages[:3]))  # the job stays in Training
    control_plane.env.upload("archive.pdf", pdf)
    control_plane.run_until("Training")
    page.run()
    [status] = _texts(page, "warning")
    assert status.startswith("**Training in progress: Training (fine-tuning GPT-2)**")
    assert "In this step for " in status and "Run started " in status
    documents = _table(page, "document")
    # In a run that has not ended yet: not "included" (that run may still fail and give it back).
    assert documents[["document", "state"]].values.tolist() == [["archive.pdf", "in the active run"]]
    runs = _table(page, "run")
    assert runs["state"].tolist() == ["Training"] and runs["documents"].tolist() == [1]
    assert "waiting for the next run" not in status
    # Retraining while a run is active is refused by the API, and the button is disabled.
    assert page.button[0].disabled
    # An upload arriving during the run waits for the next one, and the status says so.
    control_plane.env.upload("late.pdf", pdf + b"\n% a later version")
    control_plane.env.tick()
    page.run()
    assert "1 uploaded document(s) waiting for the next run." in _texts(page, "warning")[0]


def test_cancel_button_stops_the_active_run(page: AppTest, control_plane: ControlPlane, pdf: bytes) -> None:
    control_plane.env.aml.plans.append(JobPlan(promoting().stages[:3]))  # the job stays in Training
    control_plane.env.upload("archive.pdf", pdf)
    control_plane.run_until("Training")
    page.run()
    [cancel] = [b for b in page.button if b.label == "Cancel the active run"]
    cancel.click().run()
    [answer] = [w for w in _texts(page, "warning") if w.startswith("Run ")]
    assert "Failed: cancelled through the API" in answer
    env = control_plane.env
    [run] = env.store.runs()
    assert run.state == "Failed" and env.azure.job_status(run.job_id) == "Canceled"
    page.run()
    assert not [b for b in page.button if b.label == "Cancel the active run"]  # nothing left to cancel
    documents = _table(page, "document")
    assert documents["state"].tolist() == ["waiting to retry"] and "cancelled" in documents["errors"][0]


def test_a_run_gathering_uploads_counts_them_as_its_own(page: AppTest, control_plane: ControlPlane, pdf: bytes) -> None:
    control_plane.env.upload("archive.pdf", pdf)
    control_plane.env.tick()  # within the debounce: the run waits for more uploads
    page.run()
    [status] = _texts(page, "warning")
    assert status.startswith("**Training in progress: Pending (waiting for uploads to settle)**")
    assert "waiting for the next run" not in status


def test_new_model_deployed_with_version_time_and_evaluation(
    page: AppTest, control_plane: ControlPlane, pdf: bytes
) -> None:
    control_plane.env.upload("archive.pdf", pdf)
    control_plane.env.settle(after_s=61)
    page.run()
    [status] = _texts(page, "success")
    assert status.startswith("**New model deployed: gpt2-pdf version 1**")
    assert "Deployed 20" in status and " UTC (" in status
    assert f"Scoring URL: {SCORING_URL}" in " ".join(_texts(page, "caption"))
    assert "**Evaluation: promote**: perplexity 12.5 beats serving 20.1" in _texts(page, "markdown")
    evaluation = _table(page, "candidate perplexity")
    assert evaluation["registered"].tolist() == ["gpt2-pdf version 1"]
    transitions = _table(page, "at")
    assert transitions["state"].tolist() == [
        "Pending",
        "Submitted",
        "Preprocessing",
        "Training",
        "Evaluating",
        "Deploying",
        "SmokeTest",
        "Deployed",
    ]
    # No per-step log from this backend: the page says so and shows the figures it has.
    assert "no per-step loss" in " ".join(_texts(page, "caption"))
    assert [(m.label, m.value) for m in page.metric] == [
        ("train loss", "2.700"),
        ("test loss", "2.490"),
        ("test perplexity", "12.500"),
        ("tokens/s", "1,000"),
    ]


def test_documents_show_extraction_warnings_and_errors(page: AppTest, control_plane: ControlPlane, pdf: bytes) -> None:
    control_plane.env.upload("scan.pdf", pdf)
    control_plane.env.upload("broken.pdf", pdf + b"% damaged copy")
    control_plane.env.tick()
    # What preprocess's manifest says per file, recorded as the orchestrator does once the job wrote it.
    control_plane.env.store.record_extraction(
        manifest(
            "combined_data_20261123_120000.txt",
            {
                "scan.pdf": ("a" * 64, "warning", ["page 2 has no text (image only?)"]),
                "broken.pdf": ("b" * 64, "error", ["truncated: no %%EOF near the end"]),
            },
        )
    )
    page.run()
    rows = _table(page, "document").set_index("document")
    assert rows.loc["scan.pdf", ["state", "warnings", "errors"]].tolist() == [
        "extracted with warnings",
        "page 2 has no text (image only?)",
        "",
    ]
    assert rows.loc["broken.pdf", ["state", "warnings", "errors"]].tolist() == [
        "not extracted",
        "",
        "truncated: no %%EOF near the end",
    ]


def test_failed_run_shows_the_reason(page: AppTest, control_plane: ControlPlane, pdf: bytes) -> None:
    control_plane.env.aml.plans.append(failing("preprocess", "no document gave text"))
    control_plane.env.upload("archive.pdf", pdf)
    reason = control_plane.env.settle(after_s=61).error
    assert reason.startswith("preprocess step Failed: UserError: no document gave text [AML job ")
    page.run()
    [status] = _texts(page, "error")
    # The run's document is given back: a later run retries it by itself.
    assert status == f"**Failed: {reason}**\n\n1 uploaded document(s) waiting for the next run."
    assert _table(page, "run")["error"].tolist() == [reason]


def test_rejected_candidate_is_idle_with_the_gate_reason(
    page: AppTest, control_plane: ControlPlane, pdf: bytes
) -> None:
    control_plane.env.upload("archive.pdf", pdf)
    control_plane.env.settle(after_s=61)
    control_plane.env.aml.plans.append(rejecting())
    control_plane.env.upload("harbour.pdf", pdf + b"\n% another version")
    control_plane.env.settle(after_s=61)
    page.run()
    status = _texts(page, "info")[0]
    assert status.startswith("**Idle**")
    assert "not promoted: perplexity 30 is worse than 12.5" in status
    assert "Serving gpt2-pdf version 1." in status


def test_loss_curve_and_evaluation_scores_of_the_selected_run(
    page: AppTest, control_plane: ControlPlane, pdf: bytes
) -> None:
    log_history = [
        {"step": 10, "loss": 4.0},
        {"step": 20, "loss": 3.0},
        {"step": 20, "eval_loss": 3.5},
        {"step": 20, "train_loss": 3.4},
    ]
    # The run's metrics are the train summary evaluation.json carries (what the aml backend reads).
    system = [
        {"s": 0.0, "cpu_percent": 50.0, "memory_mb": 2000.0, "gpu_percent": 90.0, "gpu_memory_mb": 30000.0},
        {"s": 10.0, "cpu_percent": 70.0, "memory_mb": 2500.0, "gpu_percent": 95.0, "gpu_memory_mb": 31000.0},
    ]
    training = train_summary(
        train_loss=3.4,
        eval_loss=3.5,
        perplexity=33.1,
        tokens_per_s=None,
        log_history=log_history,
        system_metrics=system,
    )
    baseline = {"model": "gpt2", "loss": 4.5, "perplexity": 90.0, "bits_per_byte": 2.5, "tokens": 90, "bytes": 400}
    card = model_card(
        version="2",
        revision="2026.11.30-1",
        reason="Promoted: 1.10 bits/byte beats 1.90",
        test_perplexity=33.1,
        baseline_perplexity=90.0,
        serving_perplexity=60.3,
    )
    candidate = {
        "model": "/mnt/model",
        "loss": 3.5,
        "perplexity": 33.1,
        "bits_per_byte": 1.1,
        "tokens": 90,
        "bytes": 400,
    }
    control_plane.env.aml.plans.append(
        promoting(
            version="2",
            reason="Promoted: 1.10 bits/byte beats 1.90",
            candidate=candidate,
            training=training,
            baseline=baseline,
            card=card,
            serving={
                "model": "/mnt/serving",
                "loss": 4.1,
                "perplexity": 60.3,
                "bits_per_byte": 1.9,
                "tokens": 90,
                "bytes": 400,
            },
        )
    )
    control_plane.env.upload("archive.pdf", pdf)
    control_plane.env.settle(after_s=61)
    page.run()
    loss, utilisation, memory = [_plotted(chart) for chart in page.get("vega_lite_chart")]
    # The closing train_loss is the run's average, not a point of the curve; the Trainer evaluates on dev.
    assert loss == [("dev loss", 20, 3.5), ("train loss", 10, 4.0), ("train loss", 20, 3.0)]
    assert utilisation == [("CPU %", 0, 50), ("CPU %", 10, 70), ("GPU %", 0, 90), ("GPU %", 10, 95)]
    assert memory == [("GPU memory GB", 0, 30), ("GPU memory GB", 10, 31), ("memory GB", 0, 2), ("memory GB", 10, 2.5)]
    assert "no per-step loss" not in " ".join(_texts(page, "caption"))
    assert [m.label for m in page.metric] == ["train loss", "test loss", "test perplexity"]
    assert "**Evaluation: promote**: Promoted: 1.10 bits/byte beats 1.90" in _texts(page, "markdown")
    assert _table(page, "candidate perplexity").iloc[0].to_dict() == {
        "candidate perplexity": 33.1,
        "serving perplexity": 60.3,
        "base model perplexity": 90.0,
        "candidate bits/byte": 1.1,
        "serving bits/byte": 1.9,
        "base model bits/byte": 2.5,
        "registered": "gpt2-pdf version 2",
    }
    # The serving model's card, from the run that registered version 2.
    facts = _table(page, "revision").iloc[0].to_dict()
    assert facts["revision"] == "2026.11.30-1" and facts["version"] == "gpt2-pdf version 2"
    assert (facts["test perplexity"], facts["base model perplexity"], facts["serving perplexity then"]) == (
        33.1,
        90,
        60.3,
    )
    assert facts["sweep"] == "trial 2 of 3" and facts["base model"] == "gpt2"
    assert _table(page, "file").values.tolist() == [["archive.pdf", "cd" * 32]]
    assert "**Gate**: Promoted: 1.10 bits/byte beats 1.90" in _texts(page, "markdown")
    assert any("English" in text and "completes text" in text for text in _texts(page, "caption"))


def test_dropped_files_are_uploaded_once_and_refusals_explained(
    page: AppTest, control_plane: ControlPlane, pdf: bytes
) -> None:
    page.run()
    page.file_uploader[0].set_value(
        [
            ("archive.pdf", pdf, "application/pdf"),
            ("renamed.pdf", b"PK\x03\x04 a zip", "application/pdf"),
            ("empty.pdf", b"", "application/pdf"),
        ]
    ).run()
    assert _texts(page, "success") == ["**archive.pdf**: Uploaded as inputs/archive.pdf."]
    errors = _texts(page, "error")
    assert errors == [
        "**renamed.pdf**: Refused: not a PDF (nor .txt, .md, .jsonl or .json): its content does not "
        "start with %PDF-, whatever its name says.",
        "**empty.pdf**: Refused: the file is empty (0 bytes); choose the document again.",
    ]
    container: ContainerClient = control_plane.env.container
    assert [b.name for b in container.list_blobs()] == ["inputs/archive.pdf"]
    etag = container.get_blob_client("inputs/archive.pdf").get_blob_properties().etag
    page.run()  # any rerun (a click, a refresh) must not upload again
    assert container.get_blob_client("inputs/archive.pdf").get_blob_properties().etag == etag
    control_plane.env.tick()
    page.run()
    assert _table(page, "document")["document"].tolist() == ["archive.pdf"]


def test_retrain_button_queues_a_run(page: AppTest, control_plane: ControlPlane, pdf: bytes) -> None:
    control_plane.env.upload("archive.pdf", pdf)
    control_plane.env.settle(after_s=61)
    page.run()
    page.button[0].click().run()
    [queued] = [s for s in _texts(page, "success") if s.startswith("Run ")]
    assert "queued: the run is submitted on the next timer tick" in queued
    assert control_plane.env.store.current().active_run_id in queued


def test_retrain_refusal_is_shown_as_the_apis_reason(page: AppTest) -> None:
    page.run()
    page.button[0].click().run()
    assert "inputs/ holds no document to train on; upload a PDF first" in _texts(page, "error")


def test_api_down_is_a_readable_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_BASE_URL", f"http://127.0.0.1:{free_port()}")
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert _texts(at, "error")[0].startswith("Cannot reach the control plane API at http://127.0.0.1:")
    assert "Is it running, and is API_BASE_URL right?" in _texts(at, "error")[0]


def test_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UI_MAX_UPLOAD_MB", "lots")
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert _texts(at, "error") == ["UI_MAX_UPLOAD_MB='lots' is not a number; set it to e.g. 50.0"]


def test_delete_button_deletes_the_document_and_unusable_uploads_are_shown(
    page: AppTest, control_plane: ControlPlane, pdf: bytes
) -> None:
    odd = "報" * 300 + ".pdf"
    control_plane.env.upload("archive.pdf", pdf)
    control_plane.env.upload(odd, pdf)
    control_plane.env.tick()
    page.run()
    [problem] = [e for e in _texts(page, "error") if odd in e]
    assert "over the 255 a file name may have" in problem and "rename the blob" in problem
    page.selectbox(key="delete_name").select("archive.pdf").run()
    page.button(key="delete_button").click().run()
    assert not page.exception
    assert "Deleted archive.pdf: the next run leaves it out." in _texts(page, "success")
    assert not control_plane.env.container.get_blob_client("inputs/archive.pdf").exists()
    assert control_plane.env.store.document_names() == []


def test_a_sweeps_trials_are_a_table_and_a_dev_loss_chart(
    page: AppTest, control_plane: ControlPlane, pdf: bytes
) -> None:
    def trial(number: int, dev_losses: list[float], stopped: bool, error: str | None = None) -> dict:
        return {
            "trial": number,
            "settings": {"learning_rate": 1e-4 * number, "epochs": len(dev_losses) or 1},
            "dev_losses": dev_losses,
            "stopped_early": stopped,
            "stopped_by": "the Bandit rule" if stopped else None,
            "dev_loss": dev_losses[-1] if dev_losses and not error else None,
            "mlflow_run_id": None if error else f"mlflow-{number}",
            "error": error,
        }

    sweep = {
        "primary_metric": "dev_loss",
        "goal": "minimize",
        "space": {"learning_rate_min": 1e-5, "learning_rate_max": 5e-4},
        "bandit": {"slack_factor": 0.1},
        "chosen_trial": 2,
        "mlflow_run_id": "parent",
        "planned_trials": 6,
        "timeout_s": 3600,
        "trials": [
            trial(1, [3.0, 2.8], False),
            trial(2, [2.9, 2.5], False),
            trial(3, [9.0], True),
            trial(4, [], False, "OutOfMemoryError: CUDA"),
        ],
    }
    control_plane.env.aml.plans.append(promoting(version="2", training=train_summary(sweep=sweep)))
    control_plane.env.upload("archive.pdf", pdf)
    control_plane.env.settle(after_s=61)
    page.run()
    assert not page.exception
    assert "**Sweep: 4 trials, trial 2 chosen** (minimize dev_loss; stopped early: 1)" in _texts(page, "markdown")
    assert "2 planned trial(s) did not run (the sweep's time limit is 3600 s)." in _texts(page, "caption")
    table = _table(page, "trial")
    assert table[["trial", "dev loss", "stopped early", "chosen"]].fillna(-1).values.tolist() == [
        [1, 2.8, False, False],
        [2, 2.5, False, True],
        [3, 9.0, True, False],
        [4, -1, False, False],
    ]
    assert table["learning_rate"].tolist() == pytest.approx([1e-4, 2e-4, 3e-4, 4e-4])
    assert table["error"].tolist()[3] == "OutOfMemoryError: CUDA"
    assert table["stopped by"].tolist()[2] == "the Bandit rule"
    sweep_chart = next(
        c
        for c in page.get("vega_lite_chart")
        if "trial" in str(pyarrow.ipc.open_stream(c.proto.datasets[0].data.data).read_pandas().iloc[:, 1].tolist())
    )
    plotted = pyarrow.ipc.open_stream(sweep_chart.proto.datasets[0].data.data).read_pandas().dropna()
    points = sorted(zip(plotted.iloc[:, 1], plotted["epoch"], plotted.iloc[:, 2]))
    assert points == [
        ("trial 1", 1, 3.0),
        ("trial 1", 2, 2.8),
        ("trial 2", 1, 2.9),
        ("trial 2", 2, 2.5),
        ("trial 3", 1, 9.0),
    ]


def test_retrain_options_reach_the_run(page: AppTest, control_plane: ControlPlane, pdf: bytes) -> None:
    control_plane.env.upload("archive.pdf", pdf)
    control_plane.env.settle(after_s=61)
    page.run()
    page.selectbox(key="rt_preset").select("memorize").run()  # one change at a time, as a person makes them
    page.number_input(key="rt_epochs").set_value(2.0)
    page.number_input(key="rt_lr").set_value(3e-4)
    page.text_input(key="rt_base").set_value("distilgpt2")
    page.run()
    page.button[0].click().run()
    assert not page.error
    run = control_plane.env.store.get_run(control_plane.env.store.current().active_run_id)
    assert run.train == {
        "preset": "memorize",
        "epochs": 2.0,
        "learning_rate": 3e-4,
        "base_model": "distilgpt2",
        "sweep_trials": 0,
    }


def test_retrain_options_start_at_what_the_next_run_uses_and_send_only_changes(
    page: AppTest, control_plane: ControlPlane, pdf: bytes
) -> None:
    control_plane.env.upload("archive.pdf", pdf)
    control_plane.env.settle(after_s=61)
    page.run()
    shown = {key: page.session_state[key] for key in ("rt_preset", "rt_base", "rt_epochs", "rt_lr", "rt_sweep")}
    # GET /api/retrain: the app settings (TRAIN_PRESET default, BASE_MODEL gpt2) and the preset's own recipe.
    assert shown == {"rt_preset": "default", "rt_base": "gpt2", "rt_epochs": 3.0, "rt_lr": 5e-5, "rt_sweep": 0}
    assert page.number_input(key="rt_epochs").value == 3.0 and page.text_input(key="rt_base").value == "gpt2"
    page.selectbox(key="rt_preset").select("memorize").run()
    assert (page.number_input(key="rt_epochs").value, page.number_input(key="rt_lr").value) == (20.0, 2e-4)
    page.button[0].click().run()
    assert not page.error
    run = control_plane.env.store.get_run(control_plane.env.store.current().active_run_id)
    # Only the preset was changed: the epochs and learning rate stay the preset's own, not pinned.
    assert run.train == {
        "preset": "memorize",
        "epochs": None,
        "learning_rate": None,
        "base_model": "gpt2",
        "sweep_trials": 0,
    }


def test_retrain_options_that_cannot_go_together_are_named_and_not_sent(
    page: AppTest, control_plane: ControlPlane, pdf: bytes
) -> None:
    control_plane.env.upload("archive.pdf", pdf)
    control_plane.env.settle(after_s=61)
    page.run()
    page.selectbox(key="rt_preset").select("memorize")
    page.number_input(key="rt_sweep").set_value(3)
    page.run()
    assert "sweep_trials=3 needs preset default (it evaluates every epoch), not memorize; or set sweep_trials to 0" in (
        _texts(page, "error")
    )
    assert page.button[0].disabled and not control_plane.env.store.current().active_run_id


def test_rollback_asks_for_confirmation_then_serves_the_previous_model(
    page: AppTest, control_plane: ControlPlane, pdf: bytes
) -> None:
    env = control_plane.env
    for name in ("archive.pdf", "more.pdf"):
        env.upload(name, pdf + name.encode())
        env.settle(after_s=61)
    assert env.serving() == "gpt2-pdf-v2"
    page.run()
    page.button(key="rollback").click().run()
    [question] = _texts(page, "warning")
    assert question == "Move all traffic from gpt2-pdf-v2 (version 2) back to gpt2-pdf-v1?"
    page.button(key="rollback_no").click().run()
    assert not page.warning and env.serving() == "gpt2-pdf-v2"  # kept serving
    page.button(key="rollback").click().run()
    page.button(key="rollback_yes").click().run()
    assert "Rolled back: gpt2-pdf-v1 (gpt2-pdf v1) serves." in _texts(page, "success")
    assert env.serving() == "gpt2-pdf-v1"
    page.run()
    [status] = [s for s in _texts(page, "success") if s.startswith("**New model deployed")]
    assert "by Knowledge Base page: gpt2-pdf version 1 (gpt2-pdf-v1) serves instead of gpt2-pdf-v2." in status
    assert page.button(key="rollback").label == "Roll back to gpt2-pdf-v2"  # the rollback can be undone
