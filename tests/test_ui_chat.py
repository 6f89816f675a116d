"""Chat page (Streamlit AppTest): answers from the real scoring server (azmlinfsrv + score.py, tiny
model) found through the real control plane API, and a readable message for every failure."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import asdict
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from streamlit.testing.v1 import AppTest

from local_stack.processes import free_port
from local_stack.router import Router
from local_stack.scoring_server import running_scoring_server
from tests.azurite import azurite_connection  # noqa: F401 - session fixture (control_plane needs it)
from tests.tiny_model import make_tiny_model
from tests.ui_control_plane import ControlPlane, control_plane  # noqa: F401 - fixture
from tests.ui_markdown import plain
from tests.ui_servers import serving
from ui.chat_view import reply_markdown
from ui.scoring_client import GenerationSettings, Piece, stream

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")
PROMPT = "Declaration: the documents describe"


@pytest.fixture(scope="module")
def scoring_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = make_tiny_model(tmp_path_factory.mktemp("model") / "gpt2-pdf")
    with running_scoring_server(model, env={"MODEL_NAME": "gpt2-pdf", "MODEL_VERSION": "7"}) as base_url:
        yield f"{base_url}/score"


def _chat(monkeypatch: pytest.MonkeyPatch, api_url: str, **env: str) -> AppTest:
    monkeypatch.setenv("API_BASE_URL", api_url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    at = AppTest.from_file(APP, default_timeout=60).run()
    return at.switch_page("pages/chat.py").run()


def _deployed(control_plane: ControlPlane, url: str) -> str:  # noqa: F811 - fixture
    """Run the real orchestrator to a promotion whose endpoint is `url`; return the API's URL."""
    control_plane.env.azure.set_scoring_uri(url)  # the endpoint Azure "created" answers on a real local server
    control_plane.env.upload("archive.pdf", b"%PDF-1.4 archive")
    control_plane.env.settle(after_s=61)
    return control_plane.url


def _send(at: AppTest, prompt: str) -> list:
    at.chat_input[0].set_value(prompt).run()
    assert not at.exception
    return list(at.chat_message)


def test_hint_and_generation_settings_are_shown(monkeypatch: pytest.MonkeyPatch, control_plane: ControlPlane) -> None:  # noqa: F811
    at = _chat(monkeypatch, control_plane.url)
    [hint] = [plain(i.value) for i in at.info]
    assert "does not answer questions" in hint and "start the sentence" in hint
    assert "**Declaration: Zorblat Quenwick is**" in hint
    assert {s.label: s.value for s in at.sidebar.slider} == {
        "Max new tokens": 50,
        "Temperature": 0.7,
        "Top-k": 50,
        "Top-p": 0.95,
        "Repetition penalty": 1.0,
        "Alternatives": 1,
    }
    assert at.sidebar.toggle[0].value is True


def test_answer_comes_from_the_deployed_model_with_its_version(
    monkeypatch: pytest.MonkeyPatch,
    control_plane: ControlPlane,  # noqa: F811
    scoring_url: str,
) -> None:
    at = _chat(monkeypatch, _deployed(control_plane, scoring_url))
    at.toggle(key="do_sample").set_value(False)  # greedy: the same request gives the same text
    at.slider(key="max_new_tokens").set_value(8)
    user, assistant = _send(at, PROMPT)
    expected = httpx.post(
        scoring_url,
        json={
            "prompt": PROMPT,
            "max_new_tokens": 8,
            "do_sample": False,
            "temperature": 0.7,
            "top_k": 50,
            "top_p": 0.95,
            "repetition_penalty": 1.0,
        },
    ).json()["generations"][0][0]
    assert plain(user.markdown[0].value) == PROMPT
    assert plain(assistant.markdown[0].value) == f"{PROMPT} **{expected.strip()}**"
    caption = assistant.caption[0].value
    assert caption.startswith("gpt2-pdf version 7 · max_new_tokens=8 · ") and "do_sample=False" in caption
    # The history stays on the page: the example button adds two messages under the first two ...
    at.button(key="example").click().run()
    messages = list(at.chat_message)
    assert len(messages) == 4 and plain(messages[2].markdown[0].value) == "Declaration: Zorblat Quenwick is"
    assert plain(messages[3].markdown[0].value).startswith("Declaration: Zorblat Quenwick is **")
    at.run()  # ... and a rerun (any other click) does not send it again.
    assert len(at.chat_message) == 4
    at.button(key="clear").click().run()
    assert len(at.chat_message) == 0


def test_answers_stream_piece_by_piece_and_end_as_the_whole_answer(scoring_url: str) -> None:
    settings = GenerationSettings(do_sample=False, max_new_tokens=12)
    items = list(stream(scoring_url, PROMPT, settings))
    pieces, answer = items[:-1], items[-1]
    assert len(pieces) > 1 and all(isinstance(piece, Piece) for piece in pieces)
    assert "".join(piece.text for piece in pieces) == answer.text
    assert answer.texts == httpx.post(scoring_url, json={"prompt": PROMPT, **asdict(settings)}).json()["generations"][0]


def test_alternatives_side_by_side_and_a_stop_sequence(monkeypatch: pytest.MonkeyPatch, scoring_url: str) -> None:
    at = _chat(monkeypatch, f"http://127.0.0.1:{free_port()}", SCORING_URL=scoring_url)
    at.slider(key="num_return_sequences").set_value(3)
    _, assistant = _send(at, PROMPT)
    assert len(assistant.columns) == 3 and len(assistant.markdown) == 3
    assert all(plain(markdown.value).startswith(PROMPT) for markdown in assistant.markdown)
    greedy = httpx.post(scoring_url, json={"prompt": PROMPT, "max_new_tokens": 20, "do_sample": False}).json()
    stop = greedy["generations"][0][0][5:8]  # text the greedy answer writes: it must end just before it
    at.toggle(key="do_sample").set_value(False)
    at.slider(key="max_new_tokens").set_value(20)
    at.text_input(key="stop").set_value(stop)
    _, _, _, assistant = _send(at, PROMPT)
    expected = greedy["generations"][0][0].split(stop)[0]
    assert plain(assistant.markdown[0].value) == plain(reply_markdown(PROMPT, expected))


def test_multi_turn_sends_earlier_turns_as_context(monkeypatch: pytest.MonkeyPatch, scoring_url: str) -> None:
    at = _chat(monkeypatch, f"http://127.0.0.1:{free_port()}", SCORING_URL=scoring_url)
    at.toggle(key="multi_turn").set_value(True).run()
    assert "Earlier messages are sent as context" in plain(at.info[0].value)
    at.toggle(key="do_sample").set_value(False)
    at.slider(key="max_new_tokens").set_value(5)
    first = _send(at, "Diogo is")[1]
    assert "earlier turn" not in first.caption[0].value
    second = _send(at, "The quick brown fox")[3]
    assert "1 earlier turn as context" in second.caption[0].value
    # The context is what the first exchange completed: the model saw it before the new prompt.
    first_text = plain(first.markdown[0].value).replace("**", "").replace(" ", "")
    alone = httpx.post(
        scoring_url, json={"prompt": "The quick brown fox", "max_new_tokens": 5, "do_sample": False}
    ).json()
    assert alone["usage"]["history_turns"] == 0 and first_text.startswith("Diogois")
    at.button(key="clear").click().run()
    third = _send(at, "The quick brown fox")[1]
    assert "earlier turn" not in third.caption[0].value


def test_no_model_deployed_yet(monkeypatch: pytest.MonkeyPatch, control_plane: ControlPlane) -> None:  # noqa: F811
    at = _chat(monkeypatch, control_plane.url)
    _, assistant = _send(at, PROMPT)
    assert plain(assistant.error[0].value).startswith("No model is deployed yet.")


def test_model_refusal_names_the_field(
    monkeypatch: pytest.MonkeyPatch,
    control_plane: ControlPlane,  # noqa: F811
    scoring_url: str,
) -> None:
    at = _chat(monkeypatch, _deployed(control_plane, scoring_url))
    at.slider(key="max_new_tokens").set_value(128)  # the whole of the tiny model's 128-token context
    _, assistant = _send(at, PROMPT)
    assert plain(assistant.error[0].value) == (
        "The model refused the request: 'max_new_tokens' must be below the model's context of 128 tokens, got 128"
    )


def test_endpoint_down(monkeypatch: pytest.MonkeyPatch, control_plane: ControlPlane) -> None:  # noqa: F811
    dead = f"http://127.0.0.1:{free_port()}/score"
    at = _chat(monkeypatch, _deployed(control_plane, dead))
    _, assistant = _send(at, PROMPT)
    assert plain(assistant.error[0].value) == (
        f"The scoring endpoint at {dead} is not answering (connection "
        f"refused or host not found). It may be starting or down; try again "
        f"in a minute."
    )


def test_api_down_without_a_scoring_url(monkeypatch: pytest.MonkeyPatch) -> None:
    at = _chat(monkeypatch, f"http://127.0.0.1:{free_port()}")
    _, assistant = _send(at, PROMPT)
    assert plain(assistant.error[0].value).startswith(
        "Cannot find the model's endpoint: Cannot reach the control plane API"
    )


def test_scoring_url_setting_skips_the_api(monkeypatch: pytest.MonkeyPatch, scoring_url: str) -> None:
    at = _chat(monkeypatch, f"http://127.0.0.1:{free_port()}", SCORING_URL=scoring_url)
    _, assistant = _send(at, PROMPT)
    assert not assistant.error and assistant.caption[0].value.startswith("gpt2-pdf version 7 · ")


def test_endpoint_without_a_serving_deployment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The local backend's real router (the stable URL in front of the deployments) before any traffic shift.
    router = type("EmptyRouter", (Router,), {"state_file": tmp_path / "backend.json"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), router)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        at = _chat(
            monkeypatch,
            f"http://127.0.0.1:{free_port()}",
            SCORING_URL=f"http://127.0.0.1:{server.server_address[1]}/score",
        )
        _, assistant = _send(at, PROMPT)
    finally:
        server.shutdown()
    assert plain(assistant.error[0].value) == (
        "The endpoint is not serving a model right now (HTTP 503: no "
        "deployment holds traffic yet). A deployment may be starting or "
        "busy; try again in a minute."
    )


# A stand-in for failures the real server only shows under faults (a crashed worker, a proxy in front).
failing = FastAPI()


@failing.post("/error/score")
def server_error() -> JSONResponse:
    return JSONResponse({"message": "An unexpected error occurred in scoring script."}, status_code=500)


@failing.post("/proxy/score")
def bad_gateway() -> PlainTextResponse:
    return PlainTextResponse("upstream connect error", status_code=502)


@failing.post("/nonsense/score")
def not_a_generation() -> JSONResponse:
    return JSONResponse({"hello": "world"})


@pytest.fixture(scope="module")
def failing_url() -> Iterator[str]:
    with serving(failing) as url:
        yield url


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/error/score", "The scoring endpoint failed (HTTP 500): An unexpected error occurred in scoring script."),
        ("/proxy/score", "The scoring endpoint failed (HTTP 502): upstream connect error"),
        (
            "/nonsense/score",
            "The scoring endpoint answered without a generation; is SCORING_URL pointing at the model's /score?",
        ),
        (
            "/missing/score",
            "Nothing is deployed at {url}/missing/score (HTTP 404). The deployment may be in progress; "
            "check the Knowledge Base status.",
        ),
    ],
)
def test_endpoint_errors_are_readable(
    monkeypatch: pytest.MonkeyPatch, failing_url: str, path: str, message: str
) -> None:
    at = _chat(monkeypatch, f"http://127.0.0.1:{free_port()}", SCORING_URL=failing_url + path)
    _, assistant = _send(at, PROMPT)
    assert plain(assistant.error[0].value) == message.format(url=failing_url)


def test_instruction_mode_asks_in_the_training_template_and_shows_the_response(
    monkeypatch: pytest.MonkeyPatch, control_plane: ControlPlane, scoring_url: str
) -> None:  # noqa: F811
    at = _chat(monkeypatch, _deployed(control_plane, scoring_url))
    at.radio(key="mode").set_value("Instruction").run()
    [hint] = [plain(i.value) for i in at.info]
    assert "Instruction mode" in hint and "### Instruction / ### Input / ### Response" in hint
    at.toggle(key="do_sample").set_value(False)
    at.slider(key="max_new_tokens").set_value(8)
    at.text_area(key="instruction_input").set_value("Pier 4")
    user, assistant = _send(at, "Name the keeper.")
    # What the UI shows is what the scoring script answers for that instruction: the template is built there
    # (lm/prompt_format.py), never in the UI.
    expected = httpx.post(
        scoring_url,
        json={
            "prompt": "Name the keeper.",
            "format": "instruction",
            "input": "Pier 4",
            "max_new_tokens": 8,
            "do_sample": False,
            "temperature": 0.7,
            "top_k": 50,
            "top_p": 0.95,
            "repetition_penalty": 1.0,
        },
    ).json()["generations"][0][0]
    assert plain(user.markdown[0].value) == "Name the keeper."
    shown = plain(assistant.markdown[0].value)
    assert shown == (expected.strip() or "(no response: try sampling or more new tokens)")
    assert "format=instruction" in assistant.caption[0].value and "input=Pier 4" in assistant.caption[0].value
