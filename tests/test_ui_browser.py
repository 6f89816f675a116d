"""The UI in a real browser (headless chromium via Playwright) over real HTTP: drop a PDF, watch the
status change by itself, chat with the deployed model. Screenshots land in out/screenshots/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from local_stack.scoring_server import running_scoring_server
from synthetic_data.pdfs import make_text_pdf
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.contract_samples import train_summary
from tests.fakes.aml_service import promoting
from tests.tiny_model import make_tiny_model
from tests.ui_browser import browser, choose, open_chat, page, screenshot, send, upload  # noqa: F401 - fixtures
from tests.ui_control_plane import ControlPlane, control_plane  # noqa: F401 - fixture
from tests.ui_local_stack import logs, running_local_stack
from tests.ui_servers import REPO_ROOT, running_streamlit

pytestmark = pytest.mark.slow
PROMPT = "Declaration: the documents describe"


def test_upload_status_and_chat_against_the_control_plane_api(
    page: Page,
    control_plane: ControlPlane,
    azurite_connection: str,  # noqa: F811 - fixtures
    tmp_path: Path,
) -> None:
    pdf = make_text_pdf(tmp_path / "archive.pdf", ["Declaration: the archive opens at nine."])
    not_pdf = tmp_path / "minutes.pdf"
    not_pdf.write_bytes(b"PK\x03\x04 a Word document saved with the wrong name")
    model = make_tiny_model(tmp_path / "gpt2-pdf")
    ui_env = {
        "API_BASE_URL": control_plane.url,
        "DataStorage": azurite_connection,
        "DATA_CONTAINER": control_plane.env.settings.data_container,
        "UI_STATUS_REFRESH_S": "1",
    }
    with (
        running_scoring_server(model, env={"MODEL_NAME": "gpt2-pdf", "MODEL_VERSION": "7"}) as scoring,
        running_streamlit(ui_env) as ui_url,
    ):
        control_plane.env.backend.scoring_url = lambda: f"{scoring}/score"
        page.goto(ui_url)
        expect(page.get_by_text("Idle", exact=True)).to_be_visible(timeout=30_000)
        upload(page, pdf, not_pdf)
        expect(page.get_by_text("Uploaded as inputs/archive.pdf.")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Refused: not a PDF")).to_be_visible()
        assert [b.name for b in control_plane.env.container.list_blobs()] == ["inputs/archive.pdf"]

        control_plane.env.settle(after_s=61)  # the timer's work, done here; the page must notice alone
        expect(page.get_by_text("New model deployed: gpt2-pdf version 1")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Evaluation: promote")).to_be_visible()
        screenshot(page, "api_knowledge_base.png")

        open_chat(page)
        send(page, PROMPT)
        answer = page.get_by_test_id("stChatMessage").nth(1)
        expect(answer).to_contain_text(PROMPT, timeout=60_000)
        expect(answer).to_contain_text(re.compile(r"gpt2-pdf version 7 · max_new_tokens=50"))
        screenshot(page, "api_chat.png")


def test_sweep_trials_retrain_options_and_rollback_in_the_browser(
    page: Page,
    control_plane: ControlPlane,
    azurite_connection: str,  # noqa: F811 - fixtures
) -> None:
    """The second run swept: its trials show as a table and a chart; the rollback asks first, then the first
    model serves again; the retrain options reach the run they queue."""
    env = control_plane.env
    trials = [
        {
            "trial": n,
            "settings": {"learning_rate": 1e-4 * n, "epochs": 2},
            "dev_losses": losses,
            "stopped_early": n == 3,
            "dev_loss": losses[-1],
            "mlflow_run_id": f"m{n}",
            "error": None,
        }
        for n, losses in ((1, [3.0, 2.8]), (2, [2.9, 2.5]), (3, [9.0]))
    ]
    sweep = {
        "primary_metric": "dev_loss",
        "goal": "minimize",
        "space": {},
        "bandit": {},
        "chosen_trial": 2,
        "mlflow_run_id": "parent",
        "trials": trials,
    }
    env.aml.plans += [promoting(version="1"), promoting(version="2", training=train_summary(sweep=sweep))]
    for hours, name in enumerate(("a.pdf", "b.pdf")):
        env.upload(name, f"%PDF-1.4 {name}".encode())
        # An hour apart: run ids sort by their creation second, and the run view opens the newest one.
        env.settle(after_s=61 + 3600 * hours)
    ui_env = {
        "API_BASE_URL": control_plane.url,
        "DataStorage": azurite_connection,
        "DATA_CONTAINER": env.settings.data_container,
        "UI_STATUS_REFRESH_S": "60",
    }
    with running_streamlit(ui_env) as ui_url:
        page.goto(ui_url)
        # The first render of the whole page (status, card, runs) can take long on a busy 2-core CI machine.
        expect(page.get_by_text("Sweep: 3 trials, trial 2 chosen")).to_be_visible(timeout=90_000)
        expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible()
        screenshot(page, "sweep_trials.png")

        page.get_by_role("button", name="Roll back to gpt2-pdf-v1").click()
        expect(page.get_by_text("back to gpt2-pdf-v1?")).to_be_visible(timeout=15_000)
        assert env.serving() == "gpt2-pdf-v2"  # nothing happens before the confirmation
        screenshot(page, "rollback_confirmation.png")
        page.get_by_role("button", name="Yes, roll back").click()
        expect(page.get_by_text("Rolled back: gpt2-pdf-v1 (gpt2-pdf v1) serves.")).to_be_visible(timeout=15_000)
        assert env.serving() == "gpt2-pdf-v1"

        page.get_by_text("Retrain options").click()
        # The form starts at what the next run would use (GET /api/retrain): app settings, preset's recipe.
        expect(page.get_by_label("Base model")).to_have_value("gpt2")
        expect(page.get_by_label("Epochs")).to_have_value("3.00")
        expect(page.get_by_label("Learning rate")).to_have_value("5.00e-5")
        expect(page.get_by_label("Sweep trials (0 = no sweep)")).to_have_value("0")
        expect(page.get_by_role("combobox", name="Preset")).to_have_value("default")
        choose(page, "Preset", "memorize")
        expect(page.get_by_label("Epochs")).to_have_value("20.00", timeout=15_000)  # that preset's own
        expect(page.get_by_label("Learning rate")).to_have_value("2.00e-4")
        screenshot(page, "retrain_options.png")
        page.get_by_label("Epochs").fill("2")
        page.get_by_label("Epochs").press("Enter")
        page.get_by_role("button", name="Retrain now on every document").click()
        expect(page.get_by_text(re.compile(r"^Run .* queued"))).to_be_visible(timeout=15_000)
        train = env.store.get_run(env.store.current().active_run_id).train
        assert (train["preset"], train["epochs"], train["learning_rate"]) == ("memorize", 2, None)  # only changes


def test_local_stack_end_to_end(
    page: Page,
    azurite_connection: str,  # noqa: F811 - fixture
    tmp_path: Path,
) -> None:
    """Drop a sample PDF through the page; the real local pipeline trains, evaluates and deploys; the
    status reaches New model deployed by itself; the chat gets text from the deployed model."""
    samples = [REPO_ROOT / "samples" / "vellmora_archive.pdf"]  # one: training is most of this test's time
    with running_local_stack(azurite_connection, tmp_path) as stack:  # the UI too, as `make demo` runs it
        page.goto(stack["UI_URL"])
        upload(page, *samples)
        for sample in samples:
            expect(page.get_by_text(f"Uploaded as inputs/{sample.name}.")).to_be_visible(timeout=30_000)
        deployed = page.get_by_text("New model deployed: gpt2-pdf version 1")
        failed = page.get_by_text(re.compile(r"^Failed: "))
        try:
            expect(page.get_by_text("Training in progress")).to_be_visible(timeout=120_000)
            screenshot(page, "local_stack_training.png")
            expect(deployed.or_(failed)).to_be_visible(timeout=600_000)
        except AssertionError as err:
            screenshot(page, "local_stack_stuck.png")
            raise AssertionError(f"{err}\n{logs(tmp_path)}") from None
        if failed.is_visible():
            screenshot(page, "local_stack_failed.png")
            raise AssertionError(f"the run failed: {failed.inner_text()}\n{logs(tmp_path)}")
        expect(page.get_by_text("Evaluation: promote")).to_be_visible()
        screenshot(page, "local_stack_knowledge_base.png")

        open_chat(page)
        send(page, "Declaration: Zorblat Quenwick is")
        answer = page.get_by_test_id("stChatMessage").nth(1)
        expect(answer).to_contain_text("gpt2-pdf version 1 · ", timeout=120_000)
        completion = answer.get_by_test_id("stMarkdownContainer").first.locator("strong").inner_text()
        assert completion.strip(), "the deployed model added no text"
        screenshot(page, "local_stack_chat.png")
