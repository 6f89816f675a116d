"""aks_jobs/score.py called in-process, as azmlinfsrv calls it: init() on a model folder, then run(body)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aks_jobs import score
from aks_jobs.lm.serving_model import ServingModel


def init_score(model_dir: Path) -> ServingModel:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AZUREML_MODEL_DIR", str(model_dir))
        score.init()
    return score._service.served


def call(body) -> tuple[int, dict]:
    """Status and JSON answer of run() for a body (a dict, or the raw text)."""
    response = score.run(body if isinstance(body, str) else json.dumps(body))
    return response.status_code, json.loads(response.get_data())
