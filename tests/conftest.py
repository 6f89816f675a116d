"""Shared fixtures. sys.path comes from pyproject's pythonpath (repo root and aks_jobs/)."""

from __future__ import annotations

import os

# Tests never reach the Hugging Face hub; fail fast instead of retrying a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
