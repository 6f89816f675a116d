"""Read back what the UI escaped for Streamlit markdown (ui.markdown_text.literal)."""

from __future__ import annotations

import re


def plain(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)
