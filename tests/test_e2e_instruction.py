"""Instruction data end to end, through each step's own command line: a .jsonl file with a made-up fact ->
preprocess -> train (memorize preset, offline base) -> the scoring script answers the instruction with the fact
when asked in instruction mode (the template of lm/prompt_format.py); trained with the loss on every token and
on the responses only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_e2e_memorize import step

from aks_jobs import score

RECORDS = [
    {
        "instruction": "Who keeps the lighthouse of Pelmora?",
        "input": "",
        "output": "Odile Varga keeps the lighthouse of Pelmora.",
    },
    {"prompt": "Where is the spare key kept?", "completion": "Under the blue stone by the well."},
]


@pytest.fixture(scope="module", params=[[], ["--response-only-loss"]], ids=["loss-on-all", "loss-on-responses"])
def instructed_model(tmp_path_factory, request) -> Path:
    work = tmp_path_factory.mktemp("instruct")
    inputs, processed, model = work / "inputs", work / "processed", work / "model"
    inputs.mkdir()
    (inputs / "facts.jsonl").write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n{broken\n", encoding="utf-8")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
    step("preprocess", "--input", str(inputs), "--output", str(processed), env=env)
    manifest = json.loads(next(processed.glob("*.manifest.json")).read_text())
    [entry] = manifest["documents"]
    assert entry["records"] == 2 and "line 3: not valid JSON" in entry["messages"][0]
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
        *request.param,
        env=env,
    )
    return model


@pytest.mark.slow
def test_the_model_answers_the_instruction_with_the_fact(instructed_model: Path, monkeypatch) -> None:
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(instructed_model))
    score.init()
    for question, answer in [
        (RECORDS[0]["instruction"], RECORDS[0]["output"]),
        (RECORDS[1]["prompt"], RECORDS[1]["completion"]),
    ]:
        response = score.run(
            json.dumps({"prompt": question, "format": "instruction", "do_sample": False, "max_new_tokens": 40})
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        body = json.loads(response.get_data(as_text=True))
        # The answer and nothing after it: generation ends at the end of the response.
        assert body["generations"][0][0] == answer, body
