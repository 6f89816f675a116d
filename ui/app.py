"""Entry point: `python -m streamlit run ui/app.py` from the repository root (see ui/README.md for the settings).

The pages import the `ui` package: installed in .venv (make setup), the working folder under `python -m`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

st.set_page_config(page_title="GPT-2 on your PDFs", page_icon=":material/description:", layout="wide")
pages = Path(__file__).parent / "pages"
st.navigation(
    [
        st.Page(pages / "knowledge_base.py", title="Knowledge Base", icon=":material/library_books:", default=True),
        st.Page(pages / "chat.py", title="Chat", icon=":material/chat:"),
    ]
).run()
