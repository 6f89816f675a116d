"""Each step is declared once, as an AML command component; its command line must parse with the
script's own argument parser, with optional inputs both set and unset."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from azure.ai.ml import load_component

from local_stack import components as local_components

AKS_JOBS = Path(__file__).resolve().parents[1] / "aks_jobs"
STEPS = ("preprocess", "train", "evaluate")

# A value for every input, optional ones included, of the type the component declares.
ALL_INPUTS = {
    "preprocess": {"documents": "/mnt/inputs", "timeout_s": 30, "memory_mb": 512},
    "train": {
        "processed": "/mnt/processed",
        "snapshot": "/mnt/snapshot",
        "base_model": "offline",
        "preset": "memorize",
        "epochs": 7,
        "learning_rate": 0.001,
        "batch_size": 2,
        "grad_accum": 3,
        "micro_batch": 3,
        "compile": "off",
        "block_size": 128,
        "seed": 5,
    },
    "evaluate": {
        "model": "/mnt/model",
        "serving_model": "/mnt/serving",
        "max_perplexity": 50.0,
        "min_improvement": 0.02,
        "model_name": "demo-model",
    },
}
REQUIRED_ONLY = {
    "train": {"processed": "/mnt/processed"},
    "evaluate": {"model": "/mnt/model"},
}
OUTPUTS = {
    "preprocess": {"processed": "/mnt/out", "snapshot": "/mnt/snapshot"},
    "train": {"model": "/mnt/out"},
    "evaluate": {"evaluation": "/mnt/out"},
}


def parse(step: str, inputs: dict) -> dict:
    argv = local_components.load(step).argv(inputs, OUTPUTS[step])
    assert argv[:2] == ["python", f"{step}.py"]
    assert (AKS_JOBS / argv[1]).is_file()
    return vars(importlib.import_module(f"aks_jobs.{step}").parse_args(argv[2:]))


@pytest.mark.parametrize("step", STEPS)
def test_component_loads_and_validates_with_azure_ml(step):
    component = load_component(source=AKS_JOBS / "components" / f"{step}.yml")
    assert component._validate().passed
    assert (AKS_JOBS / "components" / component.code).resolve() == AKS_JOBS.resolve()
    assert component.environment.endswith("gpt2-pdf-jobs@latest")


@pytest.mark.parametrize("step", STEPS)
def test_every_input_and_output_is_used_by_the_command(step):
    component = local_components.load(step)
    used = set(re.findall(r"\{\{\s*(?:inputs|outputs)\.(\w+)\s*\}\}", component.command))
    assert used == set(component.inputs) | set(component.outputs)


def test_preprocess_command_parses(tmp_path):
    # preprocess checks that its input folder exists, so give it a real one.
    args = parse("preprocess", {**ALL_INPUTS["preprocess"], "documents": str(tmp_path)})
    assert (args["input"], str(args["output"]), str(args["snapshot_ref"])) == (tmp_path, "/mnt/out", "/mnt/snapshot")
    assert (args["timeout_s"], args["memory_mb"]) == (30, 512)
    defaults = parse("preprocess", {"documents": str(tmp_path)})
    assert (defaults["timeout_s"], defaults["memory_mb"]) == (120, 2048)


def test_train_command_parses_with_every_hyperparameter():
    args = parse("train", ALL_INPUTS["train"])
    assert str(args["data"]) == "/mnt/processed" and str(args["output"]) == "/mnt/out"
    # The snapshot preprocess named in its snapshot output (what the pipeline binds to this input).
    assert str(args["snapshot_ref"]) == "/mnt/snapshot" and args["base_model"] == "offline"
    assert args["preset"] == "memorize"
    assert (args["epochs"], args["learning_rate"], args["batch_size"]) == (7, 0.001, 2)
    assert (args["grad_accum"], args["block_size"], args["seed"]) == (3, 128, 5)
    assert (args["micro_batch"], args["compile"]) == (3, "off")


def test_train_command_leaves_unset_hyperparameters_to_the_preset():
    args = parse("train", REQUIRED_ONLY["train"])
    assert (args["base_model"], args["preset"], args["seed"]) == ("gpt2", "default", 42)
    assert args["snapshot_ref"] is None  # the newest snapshot in --data
    assert args["epochs"] is None and args["learning_rate"] is None and args["block_size"] is None
    assert args["micro_batch"] is None and args["compile"] == "auto"


def test_evaluate_command_parses():
    args = parse("evaluate", ALL_INPUTS["evaluate"])
    assert str(args["model"]) == "/mnt/model" and str(args["serving_model"]) == "/mnt/serving"
    assert (args["max_perplexity"], args["min_improvement"], args["model_name"]) == (50.0, 0.02, "demo-model")
    defaults = parse("evaluate", REQUIRED_ONLY["evaluate"])
    assert defaults["serving_model"] is None and defaults["max_perplexity"] is None
    assert (defaults["min_improvement"], defaults["model_name"]) == (0.0, "gpt2-pdf")
