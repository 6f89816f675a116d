"""Find, name and load the registered model that the scoring server serves (AZUREML_MODEL_DIR)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from aks_jobs.lm.graphed_forward import GraphedForward
from aks_jobs.lm.int8_weights import fuse_gelu, quantize_linear_layers
from aks_jobs.lm.kv_forward import CachedForward, Gpt2CachedForward

MODEL_DIR_ENV = "AZUREML_MODEL_DIR"
# How the weights are served: "auto" is int8 on CPU (4x less memory read per token; docs/performance.md) and the
# saved weights in bf16 on GPU; "float" serves them unquantized on any device (float32 on CPU).
WEIGHTS_ENV = "SCORING_WEIGHTS"
WEIGHTS_CHOICES = ("auto", "float", "int8")
Weights = Literal["float32", "bfloat16", "int8"]


class ModelFolderError(RuntimeError):
    """The model folder is missing or ambiguous; init() fails with this message."""


class ServingSettingError(RuntimeError):
    """A SCORING_* setting of the deployment is invalid; init() fails with this message."""


@dataclass(frozen=True)
class ServingModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    version: str
    folder: Path
    weights: Weights = "float32"  # what the linear layers compute in


def find_model_dir(root: Path) -> Path:
    """The one folder holding config.json: root itself, or the shallowest one below it.

    AML mounts a registered folder as AZUREML_MODEL_DIR/<folder name>/, and MLflow-logged models add a
    model/ level; deeper config.json files (e.g. trainer checkpoints inside the model) are ignored.
    """
    if not root.is_dir():
        raise ModelFolderError(f"{MODEL_DIR_ENV}={root} is not a folder; point it at the registered model")
    # followlinks: AML may expose the model folder through symlinks.
    found = sorted(Path(folder) for folder, _, files in os.walk(root, followlinks=True) if "config.json" in files)
    if not found:
        raise ModelFolderError(
            f"no config.json under {MODEL_DIR_ENV}={root}: register a save_pretrained() "
            f"folder (config.json, weights and tokenizer files)"
        )
    depth = min(len(folder.relative_to(root).parts) for folder in found)
    shallowest = [folder for folder in found if len(folder.relative_to(root).parts) == depth]
    if len(shallowest) > 1:
        listed = ", ".join(str(folder.relative_to(root)) for folder in shallowest)
        raise ModelFolderError(
            f"several model folders under {MODEL_DIR_ENV}={root} ({listed}); register exactly one model folder"
        )
    return shallowest[0]


def find_tokenizer_dir(model_dir: Path) -> Path:
    """Tokenizer files live beside the weights, or in components/tokenizer for MLflow's transformers flavor."""
    for folder in (model_dir, model_dir.parent / "components" / "tokenizer"):
        if (folder / "tokenizer_config.json").is_file():
            return folder
    raise ModelFolderError(
        f"no tokenizer_config.json in {model_dir}: save the tokenizer with the model (tokenizer.save_pretrained)"
    )


def model_identity(model_root: str, env: Mapping[str, str]) -> tuple[str, str]:
    """(name, version): MODEL_NAME / MODEL_VERSION, else .../azureml-models/<name>/<version>, else the folder name."""
    parts = Path(model_root).parts
    name, version = Path(model_root).name or "unknown", "unknown"
    if "azureml-models" in parts:
        after = parts[len(parts) - parts[::-1].index("azureml-models") :]
        name = after[0] if after else name
        version = after[1] if len(after) > 1 else version
    return env.get("MODEL_NAME") or name, env.get("MODEL_VERSION") or version


def served_weights(env: Mapping[str, str], device: torch.device) -> Weights:
    """What SCORING_WEIGHTS asks for on `device`: int8 by default on CPU, bf16 on GPU, float on request."""
    requested = env.get(WEIGHTS_ENV, "auto").strip().lower()
    if requested not in WEIGHTS_CHOICES:
        raise ServingSettingError(
            f"{WEIGHTS_ENV}={requested!r} is not one of {', '.join(WEIGHTS_CHOICES)}; unset it for the device's default"
        )
    if device.type == "cpu":
        return "float32" if requested == "float" else "int8"
    if requested == "int8":
        raise ServingSettingError(
            f"{WEIGHTS_ENV}=int8 is for CPU deployments (its int8 kernels are CPU ones); "
            f"on {device.type} unset it or set it to float"
        )
    return "bfloat16"


def load_serving_model(env: Mapping[str, str] = os.environ) -> ServingModel:
    """Load for inference: eval mode, no gradients, SDPA; int8 linear layers on CPU, bf16 on GPU (SCORING_WEIGHTS)."""
    model_root = env.get(MODEL_DIR_ENV)
    if not model_root:
        raise ModelFolderError(f"{MODEL_DIR_ENV} is not set; point it at the model folder (azmlinfsrv --model_dir DIR)")
    folder = find_model_dir(Path(model_root))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    weights = served_weights(env, device)
    dtype = torch.bfloat16 if weights == "bfloat16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa")
    model.to(device).eval().requires_grad_(False)
    if weights == "int8":
        quantize_linear_layers(model)
        fuse_gelu(model)  # the int8 model's outputs are its own anyway; float stays exactly the saved model

    tokenizer = AutoTokenizer.from_pretrained(find_tokenizer_dir(folder))
    tokenizer.padding_side = "left"  # decoder-only batches: every prompt must end where generation starts
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 ships without one
    name, version = model_identity(model_root, env)
    return ServingModel(model=model, tokenizer=tokenizer, name=name, version=version, folder=folder, weights=weights)


def cached_forward(served: ServingModel, slots: int, *, cuda_graphs: bool = False) -> CachedForward:
    """How the served model runs a decode step over its KV cache of `slots` sequences; with `cuda_graphs` (a
    CUDA model only) each step replays a CUDA graph captured here (lm.graphed_forward).

    The one place to plug in another way of running the weights (int8, another runtime): return anything with
    lm.kv_forward.CachedForward's methods; batching, sampling, seeds, stop sequences and streaming stay as they are.
    """
    forward = Gpt2CachedForward(served.model, slots)
    return GraphedForward(forward) if cuda_graphs else forward
