"""Chat (user): prompt the deployed model; it completes the text you start."""
from __future__ import annotations

import streamlit as st

from ui import page_setup
from ui.api_client import ApiError
from ui.chat_view import history_entry
from ui.markdown_text import literal
from ui.scoring_client import GenerationSettings, ScoringError, complete

config = page_setup.settings()
defaults = GenerationSettings()

st.title(":material/chat: Chat")
st.info(f"This GPT-2 **completes text**; it does not answer questions. Do not ask a question, start the "
        f"sentence: instead of *Who is Zorblat Quenwick?* write **{literal(config.example_prompt)}** and let "
        f"the model finish it. Each message is completed on its own (earlier messages are not sent).",
        icon=":material/lightbulb:")
# True in the run right after the click only, so each click sends the example once.
example = st.button(f"Try the example: {literal(config.example_prompt)}", icon=":material/play_arrow:",
                    key="example")

with st.sidebar:
    st.header("Generation settings")
    settings = GenerationSettings(
        max_new_tokens=st.slider("Max new tokens", 1, 512, defaults.max_new_tokens, key="max_new_tokens"),
        temperature=st.slider("Temperature", 0.05, 2.0, defaults.temperature, 0.05, key="temperature",
                              help="Higher is more surprising; lower sticks to the likeliest words."),
        top_k=st.slider("Top-k", 0, 200, defaults.top_k, key="top_k",
                        help="Sample among the k likeliest tokens (0 = all)."),
        top_p=st.slider("Top-p", 0.05, 1.0, defaults.top_p, 0.05, key="top_p",
                        help="Sample among the likeliest tokens whose probabilities add up to p."),
        repetition_penalty=st.slider("Repetition penalty", 1.0, 2.0, defaults.repetition_penalty, 0.05,
                                     key="repetition_penalty",
                                     help="Above 1 discourages repeating the same words."),
        do_sample=st.toggle("Sample", defaults.do_sample, key="do_sample",
                            help="Off: always the likeliest next word (greedy; the sliders above are unused)."),
    )
    if st.button("Clear chat", icon=":material/delete_sweep:", key="clear"):
        st.session_state["chat"] = []


def scoring_url() -> str | None:
    """SCORING_URL if set, else the stable URL the control plane reports (None before any deployment)."""
    if config.scoring_url:
        return config.scoring_url
    try:
        return page_setup.api(config).status().get("scoring_url")
    except ApiError as err:
        raise ScoringError(f"Cannot find the model's endpoint: {err}") from None


def show(message: dict) -> None:
    with st.chat_message(message["role"]):
        if "error" in message:
            st.error(literal(message["error"]), icon=":material/error:")
        else:
            st.markdown(message["markdown"])
        if "caption" in message:
            st.caption(message["caption"])


history: list[dict] = st.session_state.setdefault("chat", [])
for message in history:
    show(message)

typed = st.chat_input(f"Start a sentence, e.g. {config.example_prompt}")
prompt = typed or (config.example_prompt if example else None)
if prompt:
    history.append({"role": "user", "markdown": literal(prompt)})
    show(history[-1])
    with st.spinner("The model is writing..."):
        try:
            answer = complete(scoring_url(), prompt, settings, key=page_setup.scoring_key(config),
                              timeout_s=config.scoring_timeout_s)
        except ScoringError as err:
            history.append({"role": "assistant", "error": str(err)})
        else:
            history.append(history_entry(prompt, answer))
    show(history[-1])
