"""Streamlit web UI: Knowledge Base (upload PDFs, watch the pipeline) and Chat (prompt the served model).

Logic lives in plain modules (settings, api_client, scoring_client, storage, uploads, status_view,
run_view); the pages under pages/ only lay out what those return.
"""
