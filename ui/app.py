"""Entry point: `streamlit run ui/app.py` (see ui/README.md for the settings)."""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts only ui/ on sys.path; the pages import the `ui` package from the repo root.
# This script reruns on every interaction: add the root once.
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

st.set_page_config(page_title="GPT-2 on your PDFs", page_icon=":material/description:", layout="wide")
pages = Path(__file__).parent / "pages"
st.navigation([
    st.Page(pages / "knowledge_base.py", title="Knowledge Base", icon=":material/library_books:", default=True),
    st.Page(pages / "chat.py", title="Chat", icon=":material/chat:"),
]).run()
