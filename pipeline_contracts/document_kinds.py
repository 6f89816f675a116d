"""Document kinds (seed 003): uploads under inputs/<kind>/ are one type of text, marked by a special token.

A document inputs/letters/a.pdf has the kind "letters"; its text goes into the snapshot as
`<|letters|> text <|endoftext|>`, the tokenizer gets `<|letters|>` as one added special token, and a prompt
can start with it to ask for that kind of text. Documents directly under inputs/ have no kind and are
trained on exactly as before. Only the first folder level names the kind: inputs/letters/2021/a.pdf is a
"letters" document too (deeper folders only organise the uploads).

Used by the preprocess step (wrapping), the train step (tokens), the scoring server and the UI (picker, upload).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

END_OF_TEXT = "<|endoftext|>"  # GPT-2's end-of-text token
_KIND_NAME = r"[A-Za-z0-9][A-Za-z0-9-]{0,39}"
KIND_PATTERN = rf"^{_KIND_NAME}$"
KIND_RULE = "letters A-Z a-z, digits and hyphens, starting with a letter or digit, at most 40 characters"
# <|endoftext|> is GPT-2's own end-of-text token: a kind of that name would be read as the end of a document.
RESERVED = frozenset({"endoftext"})
_KIND = re.compile(KIND_PATTERN)
_TOKEN = re.compile(rf"^<\|({_KIND_NAME})\|>$")

Kind = Annotated[str, Field(pattern=KIND_PATTERN)]


class KindError(ValueError):
    """A folder or field that cannot be a kind; the message names it and the allowed pattern."""


def kind_problem(kind: str) -> str | None:
    """Why `kind` cannot be a kind (None when it can)."""
    if kind in RESERVED:
        return f"'{kind}' is reserved (GPT-2's own <|{kind}|> token); choose another name"
    if not _KIND.match(kind):
        return f"'{kind}' is not a valid kind: use {KIND_RULE} (pattern {KIND_PATTERN})"
    return None


def kind_of(name: str) -> str | None:
    """The kind of an upload named relative to inputs/ ("letters/a.pdf" -> "letters", "a.pdf" -> None).

    Raises KindError naming the path when its first folder is not a valid kind."""
    folder, slash, _ = name.partition("/")
    if not slash:
        return None
    problem = kind_problem(folder)
    if problem:
        raise KindError(
            f"its folder inputs/{folder}/ names its document kind, and {problem}. Move the file to a folder so "
            f"named (e.g. inputs/letters/), or directly under inputs/ for no kind; it was left out of the snapshot."
        )
    return folder


def kind_token(kind: str) -> str:
    return f"<|{kind}|>"


def token_kind(token: str) -> str | None:
    """The kind a special token marks ("<|letters|>" -> "letters"), or None for any other token."""
    match = _TOKEN.match(token)
    return match.group(1) if match and match.group(1) not in RESERVED else None


def wrap(kind: str, text: str) -> str:
    """One document of a kind as training text: `<|kind|> text <|endoftext|>`."""
    return f"{kind_token(kind)} {text} {END_OF_TEXT}"


def wrap_records(kind: str, records: str) -> str:
    """Instruction records (each already ending in <|endoftext|>): each one starts with `<|kind|> `."""
    parts = records.split(END_OF_TEXT)
    head = kind_token(kind) + " "
    return "".join(head + part + END_OF_TEXT for part in parts[:-1]) + (head + parts[-1] if parts[-1] else "")


def prompt_prefix(kind: str) -> str:
    """What a prompt for that kind starts with."""
    return kind_token(kind) + " "
