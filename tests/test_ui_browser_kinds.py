"""Document kinds in the browser (headless chromium, real HTTP): the upload's kind field puts files into
inputs/<kind>/ (a bad kind is refused before anything is written), and the Chat page offers the serving model's
kinds, starting the prompt with the picked kind's token."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from transformers import AutoModelForCausalLM, AutoTokenizer

from aks_jobs.lm.kind_tokens import add_kind_tokens
from local_stack.scoring_server import running_scoring_server
from synthetic_data.pdfs import make_text_pdf
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.tiny_model import make_tiny_model
from tests.ui_browser import browser, open_chat, page, screenshot, send, upload  # noqa: F401 - fixtures
from tests.ui_control_plane import ControlPlane, control_plane  # noqa: F401 - fixture
from tests.ui_servers import running_streamlit

pytestmark = pytest.mark.slow
PROMPT = "Declaration: the documents describe"


def kind_model(folder: Path, kinds: list[str]) -> Path:
    """The tests' tiny GPT-2 with a token per kind, saved as the train step saves it."""
    make_tiny_model(folder)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    add_kind_tokens(tokenizer, model, kinds)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_upload_into_a_kind_and_chat_with_a_picked_kind(
    page: Page,
    control_plane: ControlPlane,
    azurite_connection: str,  # noqa: F811 - fixtures
    tmp_path: Path,
) -> None:
    pdf = make_text_pdf(tmp_path / "to-anna.pdf", ["Dear Anna, the orchard is in bloom."])
    model = kind_model(tmp_path / "gpt2-pdf", ["letters", "memos"])
    with running_scoring_server(model, env={"MODEL_NAME": "gpt2-pdf", "MODEL_VERSION": "3"}) as scoring:
        ui_env = {
            "API_BASE_URL": control_plane.url,
            "DataStorage": azurite_connection,
            "DATA_CONTAINER": control_plane.env.settings.data_container,
            "SCORING_URL": f"{scoring}/score",
        }
        with running_streamlit(ui_env) as ui_url:
            page.goto(ui_url)
            kind = page.get_by_role("textbox", name="Document kind (optional)")
            kind.fill("bad kind!")
            kind.press("Enter")
            expect(
                page.get_by_text("Not uploaded yet: the document kind 'bad kind!' is not a valid kind")
            ).to_be_visible(timeout=30_000)
            upload(page, pdf)
            expect(page.get_by_text("waits for a valid document kind")).to_be_visible(timeout=30_000)
            assert not list(control_plane.env.container.list_blobs())  # nothing written under a bad kind
            kind.fill("letters")
            kind.press("Enter")
            expect(page.get_by_text("Uploaded as inputs/letters/to-anna.pdf.")).to_be_visible(timeout=30_000)
            assert [b.name for b in control_plane.env.container.list_blobs()] == ["inputs/letters/to-anna.pdf"]
            screenshot(page, "kinds_upload.png")

            open_chat(page)
            picker = page.get_by_test_id("stSelectbox").filter(has_text="Document kind")
            expect(picker).to_be_visible(timeout=30_000)
            picker.click()
            expect(page.get_by_role("option")).to_have_text(["(any)", "letters", "memos"])
            page.get_by_role("option", name="letters").click()
            send(page, PROMPT)
            question, answer = page.get_by_test_id("stChatMessage").nth(0), page.get_by_test_id("stChatMessage").nth(1)
            expect(question).to_contain_text(f"<|letters|> {PROMPT}", timeout=60_000)
            expect(answer).to_contain_text(re.compile(r"gpt2-pdf version 3 · .*kind=letters"), timeout=60_000)
            screenshot(page, "kinds_chat.png")


def test_no_kind_picker_for_a_model_without_kinds(page: Page, tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "gpt2-pdf")
    with (
        running_scoring_server(model) as scoring,
        running_streamlit({"API_BASE_URL": "http://127.0.0.1:9", "SCORING_URL": f"{scoring}/score"}) as ui_url,
    ):
        page.goto(ui_url)
        open_chat(page)
        send(page, PROMPT)
        expect(page.get_by_test_id("stChatMessage").nth(1)).to_contain_text(PROMPT, timeout=60_000)
        expect(page.get_by_test_id("stSelectbox").filter(has_text="Document kind")).to_have_count(0)
