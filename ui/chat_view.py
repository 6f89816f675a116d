"""How a chat exchange is shown: the model's continuation after the prompt (alternatives side by side), and what
produced it."""

from __future__ import annotations

from typing import Any

from ui.markdown_text import literal
from ui.scoring_client import Answer

# Echoed by the server but shown otherwise (alternatives are the columns) or only when set.
_NOT_SHOWN = {"num_return_sequences", "stop"}


def reply_markdown(prompt: str, continuation: str) -> str:
    """The prompt, then in bold what the model added to it, so the completed sentence reads as one."""
    added = continuation.strip()
    if not added:
        return f"{literal(prompt)} *(the model added nothing: try sampling or more new tokens)*"
    return f"{literal(prompt)} **{literal(added)}**"


def answer_caption(answer: Answer) -> str:
    """Which model answered and the exact settings it used (seed included), to reproduce the answer."""
    used = [f"{key}={value}" for key, value in answer.parameters.items() if key not in _NOT_SHOWN]
    if answer.parameters.get("stop"):
        used.append(f"stop={answer.parameters['stop']}")
    if answer.history_turns:
        used.append(f"{answer.history_turns} earlier turn{'s' if answer.history_turns > 1 else ''} as context")
    return " · ".join([f"{answer.model_name} version {answer.model_version}", *used])


def response_markdown(response: str) -> str:
    """Instruction mode: the model's response on its own."""
    return literal(response.strip()) or "*(no response: try sampling or more new tokens)*"


def history_entry(prompt: str, answer: Answer, instruction: bool = False) -> dict[str, Any]:
    shown = [response_markdown(text) if instruction else reply_markdown(prompt, text) for text in answer.texts]
    return {"role": "assistant", "markdowns": shown, "caption": answer_caption(answer)}


def conversation_turn(prompt: str, answer: Answer) -> str:
    """What an exchange contributes as context to the next ones in multi-turn mode: the completed text."""
    return f"{prompt}{answer.text}"
