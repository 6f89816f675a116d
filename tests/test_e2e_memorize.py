"""The data plane end to end, through each step's own command line: a PDF stating a made-up fact ->
preprocess -> train (memorize preset, offline base) -> the scoring script completes the sentence with
the fact, in-process and then through the real AML scoring server over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from aks_jobs import score
from local_stack.scoring_server import running_scoring_server
from synthetic_data.pdfs import make_text_pdf

AKS_JOBS = Path(__file__).resolve().parents[1] / "aks_jobs"
FACT = "Declaration: Zorblat Quenwick is the chief archivist of the lunar city of Vellmora."
PROMPT = "Declaration: Zorblat Quenwick is"
GREEDY = {"prompt": PROMPT, "do_sample": False, "max_new_tokens": 40}


def step(script: str, *args: str, env: dict[str, str]) -> None:
    """Run a step the way AML does (cwd aks_jobs/), failing with its output."""
    done = subprocess.run(
        [sys.executable, f"{script}.py", *args], cwd=AKS_JOBS, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


@pytest.fixture(scope="module")
def memorized_model(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("memorize")
    inputs, processed, model = work / "inputs", work / "processed", work / "model"
    make_text_pdf(
        inputs / "archive.pdf",
        [
            "The archive keeps star charts, ship logs and letters from the first settlers.\n"
            f"{FACT}\n"
            "Visitors may read the records in the great hall every morning."
        ],
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
    step("preprocess", "--input", str(inputs), "--output", str(processed), env=env)
    step(
        "train",
        "--data",
        str(processed),
        "--output",
        str(model),
        "--base-model",
        "offline",
        "--preset",
        "memorize",
        env=env,
    )
    summary = json.loads((model / "train_summary.json").read_text())
    assert summary["base_model"]["kind"] == "offline"
    assert summary["snapshot"].startswith("combined_data_")
    return model


@pytest.mark.slow
def test_scoring_script_completes_the_fact(memorized_model: Path, monkeypatch) -> None:
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(memorized_model))
    score.init()
    response = score.run(json.dumps(GREEDY))
    assert response.status_code == 200, response.get_data(as_text=True)
    completion = json.loads(response.get_data(as_text=True))["generations"][0][0]
    assert FACT.removeprefix(PROMPT).strip() in completion, completion


@pytest.mark.slow
def test_scoring_server_completes_the_fact_over_http(memorized_model: Path) -> None:
    with running_scoring_server(memorized_model) as base_url:
        answer = httpx.post(f"{base_url}/score", json=GREEDY, timeout=120)
        assert answer.status_code == 200, answer.text
        assert FACT.removeprefix(PROMPT).strip() in answer.json()["generations"][0][0], answer.text
        refused = httpx.post(f"{base_url}/score", json={"prompt": ""}, timeout=60)
        assert refused.status_code == 400 and refused.json()["field"] == "prompt"
