"""Read a streamed scoring answer: the Server-Sent Events scoring_service writes for `"stream": true`."""
from __future__ import annotations

import json


def streamed_answer(body: str) -> tuple[list[str], dict]:
    """The text pieces joined per sequence (by "index"), and the final `done` event's answer.
    Raises ValueError for an `error` event or no `done`."""
    texts: dict[int, str] = {}
    for block in body.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line]
        if not lines:
            continue
        event = next((line[len("event: "):] for line in lines if line.startswith("event: ")), "message")
        data = json.loads("\n".join(line[len("data: "):] for line in lines if line.startswith("data: ")))
        if event == "done":
            return [texts[i] for i in sorted(texts)], data
        if event == "error":
            raise ValueError(f"the stream ended with an error: {data.get('message')}")
        texts[data["index"]] = texts.get(data["index"], "") + data["text"]
    raise ValueError(f"the stream ended without its done event: {body[-300:]!r}")
