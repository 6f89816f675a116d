"""Chat (user): prompt the deployed model; it completes the text you start, or, in Instruction mode,
answers an instruction in the template its instruction data was trained in (seed 002)."""

from __future__ import annotations

import streamlit as st

from pipeline_contracts.document_kinds import kind_token
from ui import page_setup
from ui.api_client import ApiError
from ui.chat_view import conversation_turn, history_entry, reply_markdown, response_markdown
from ui.markdown_text import literal
from ui.scoring_client import GenerationSettings, Piece, ScoringError, model_info, stream

config = page_setup.settings()
defaults = GenerationSettings()

st.title(":material/chat: Chat")
instruction = (
    st.radio(
        "Mode",
        ["Completion", "Instruction"],
        key="mode",
        horizontal=True,
        help="Instruction: for models trained on instruction data (.jsonl/.json uploads).",
    )
    == "Instruction"
)
# An instruction is answered on its own; earlier turns go with completions only.
multi_turn = st.session_state.get("multi_turn", False) and not instruction
if instruction:
    st.info(
        "Instruction mode: your message is sent as an **instruction** in the template the model's instruction "
        "data was trained in (### Instruction / ### Input / ### Response), and the answer is the response "
        "alone. It works for models trained on .jsonl/.json instruction uploads.",
        icon=":material/lightbulb:",
    )
    input_text = st.text_area(
        "Input (optional)",
        key="instruction_input",
        help="Context for the instruction: the template's ### Input section.",
    )
else:
    input_text = ""
    st.info(
        f"This GPT-2 **completes text**; it does not answer questions. Do not ask a question, start the "
        f"sentence: instead of *Who is Zorblat Quenwick?* write **{literal(config.example_prompt)}** and let "
        f"the model finish it. "
        + (
            "Earlier messages are sent as context, the oldest dropped first when they no longer fit the model."
            if multi_turn
            else "Each message is completed on its own (earlier messages are not sent)."
        ),
        icon=":material/lightbulb:",
    )
# True in the run right after the click only, so each click sends the example once.
example = st.button(f"Try the example: {literal(config.example_prompt)}", icon=":material/play_arrow:", key="example")

with st.sidebar:
    st.header("Generation settings")
    sample = st.toggle(
        "Sample",
        defaults.do_sample,
        key="do_sample",
        help="Off: always the likeliest next word (greedy; the sliders below are unused).",
    )
    stop = st.text_input(
        "Stop at",
        "",
        key="stop",
        help="The answer ends just before this text (e.g. a full stop); empty: write up to max new tokens.",
    )
    settings = GenerationSettings(
        max_new_tokens=st.slider("Max new tokens", 1, 512, defaults.max_new_tokens, key="max_new_tokens"),
        temperature=st.slider(
            "Temperature",
            0.05,
            2.0,
            defaults.temperature,
            0.05,
            key="temperature",
            help="Higher is more surprising; lower sticks to the likeliest words.",
        ),
        top_k=st.slider(
            "Top-k", 0, 200, defaults.top_k, key="top_k", help="Sample among the k likeliest tokens (0 = all)."
        ),
        top_p=st.slider(
            "Top-p",
            0.05,
            1.0,
            defaults.top_p,
            0.05,
            key="top_p",
            help="Sample among the likeliest tokens whose probabilities add up to p.",
        ),
        repetition_penalty=st.slider(
            "Repetition penalty",
            1.0,
            2.0,
            defaults.repetition_penalty,
            0.05,
            key="repetition_penalty",
            help="Above 1 discourages repeating the same words.",
        ),
        do_sample=sample,
        num_return_sequences=st.slider(
            "Alternatives",
            1,
            5,
            1,
            key="num_return_sequences",
            disabled=not sample,
            help="Several answers to compare, side by side (sampling only).",
        )
        if sample
        else 1,
        stop=(stop,) if stop else (),
    )
    st.toggle(
        "Remember the conversation",
        False,
        key="multi_turn",
        disabled=instruction,
        help="Send earlier messages as context; the oldest are dropped when they no longer fit the model "
        "(completion mode).",
    )
    if st.button("Clear chat", icon=":material/delete_sweep:", key="clear"):
        st.session_state["chat"] = []
        st.session_state["turns"] = []


def scoring_url() -> str | None:
    """SCORING_URL if set, else the stable URL the control plane reports (None before any deployment)."""
    if config.scoring_url:
        return config.scoring_url
    try:
        return page_setup.api(config).status().scoring_url
    except ApiError as err:
        raise ScoringError(f"Cannot find the model's endpoint: {err}") from None


def served_kinds() -> list[str]:
    """The serving model's document kinds: asked once per session and endpoint, then kept current by each answer."""
    try:
        url = scoring_url()
    except ScoringError:
        return []
    if not url:
        return []
    known = st.session_state.setdefault("served_kinds", {})
    if url not in known:
        info = model_info(url, key=page_setup.scoring_key(config), timeout_s=config.scoring_timeout_s)
        known[url] = list(info.model.kinds) if info else []
    return known[url]


kinds = served_kinds()
kind = ""
if kinds:
    picked = st.selectbox(
        "Document kind",
        ["(any)", *kinds],
        key="kind",
        help="The model was trained on documents of these kinds (upload folders). Picking one starts your "
        "prompt with its token <|kind|>, asking for text like that kind's documents.",
    )
    kind = "" if picked == "(any)" else picked


def render(message: dict) -> None:
    if "error" in message:
        st.error(literal(message["error"]), icon=":material/error:")
    elif len(message.get("markdowns", ())) > 1:
        for column, markdown in zip(st.columns(len(message["markdowns"])), message["markdowns"], strict=True):
            column.markdown(markdown)
    else:
        st.markdown(message.get("markdown") or message["markdowns"][0])
    if "caption" in message:
        st.caption(message["caption"])


def show(message: dict) -> None:
    with st.chat_message(message["role"]):
        render(message)


def answer(prompt: str) -> dict:
    """Stream the model's answer onto the page as it is written; return the history entry."""
    live = st.empty()
    texts = [""] * settings.num_return_sequences
    try:
        context = st.session_state.setdefault("turns", []) if multi_turn else []
        url = scoring_url()
        for item in stream(
            url,
            prompt,
            settings,
            history=context,
            instruction=instruction,
            input_text=input_text,
            kind=kind,
            key=page_setup.scoring_key(config),
            timeout_s=config.scoring_timeout_s,
        ):
            if isinstance(item, Piece):
                texts[item.sequence] += item.text
                shown = [response_markdown(text) if instruction else reply_markdown(prompt, text) for text in texts]
                with live.container():
                    render({"markdowns": [markdown + " ▍" for markdown in shown]})
            else:
                st.session_state.setdefault("served_kinds", {})[url] = list(item.kinds)
                if not instruction:
                    st.session_state.setdefault("turns", []).append(conversation_turn(prompt, item))
                entry = history_entry(prompt, item, instruction)
    except ScoringError as err:
        entry = {"role": "assistant", "error": str(err)}
    with live.container():
        render(entry)
    return entry


history: list[dict] = st.session_state.setdefault("chat", [])
for message in history:
    show(message)

typed = st.chat_input("Give an instruction" if instruction else f"Start a sentence, e.g. {config.example_prompt}")
prompt = typed or (config.example_prompt if example else None)
if prompt:
    shown = f"`{kind_token(kind)}` {literal(prompt)}" if kind else literal(prompt)
    history.append({"role": "user", "markdown": shown})
    show(history[-1])
    with st.chat_message("assistant"):
        history.append(answer(prompt))
