"""Show text from elsewhere (model output, file names, error reasons) inside Streamlit markdown as is."""

from __future__ import annotations

import re

# Markdown punctuation, plus what Streamlit's markdown adds: $ (LaTeX), : (:material/..: and :red[..]
# directives), ~ (strikethrough) and < (HTML).
_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~<$:])")


def literal(text: str) -> str:
    """`text` escaped so that markdown renders exactly these characters."""
    return _SPECIAL.sub(r"\\\1", text)
