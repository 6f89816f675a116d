"""Resolve --base-model: a Hugging Face hub id, a local save_pretrained() folder, or `offline`.

`offline` needs no hub: GPT-2's architecture at a small size, randomly initialised, with a byte-level
BPE tokenizer trained on the snapshot. It runs the real training code on machines without hub access
(and in tests); it knows only what the snapshot teaches it, so it is no substitute for `gpt2`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2Tokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from aks_jobs.lm.presets import OFFLINE_KIND
from aks_jobs.lm.serving_model import ModelFolderError, find_model_dir, find_tokenizer_dir
from pipeline_contracts.document_kinds import END_OF_TEXT

log = logging.getLogger(__name__)

# ~3.4M parameters besides the embeddings: trains at hundreds of steps a minute on two CPU cores,
# yet has the capacity to memorise a few pages. 512 positions: half of GPT-2's context, as its blocks
# rarely need more on small corpora, and attention cost grows with the square of it.
OFFLINE_ARCHITECTURE = {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_positions": 512}
# Upper bound: a small corpus gives fewer merges (BPE stops when no pair occurs min_frequency times).
OFFLINE_VOCAB_SIZE = 8192

Kind = Literal["hub", "local", "offline"]


class BaseModelError(RuntimeError):
    """--base-model cannot be loaded; the message says what to use instead."""


@dataclass
class BaseModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    requested: str
    resolved: str  # the hub id, the absolute folder, or a description of the offline architecture
    kind: Kind

    @property
    def context(self) -> int:
        return int(self.model.config.max_position_embeddings)

    def describe(self) -> dict[str, str]:
        return {"requested": self.requested, "resolved": self.resolved, "kind": self.kind}


def train_tokenizer(documents: list[str], vocab_size: int = OFFLINE_VOCAB_SIZE) -> GPT2Tokenizer:
    """GPT-2's tokenizer scheme (byte-level BPE, <|endoftext|> as EOS, BOS and pad) learned from `documents`."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        documents,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=[END_OF_TEXT],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes, whatever the corpus
        ),
    )
    learned = json.loads(bpe.to_str())["model"]
    return GPT2Tokenizer(
        vocab=learned["vocab"],
        merges=[tuple(pair) for pair in learned["merges"]],
        pad_token=END_OF_TEXT,
        model_max_length=OFFLINE_ARCHITECTURE["n_positions"],
    )


def build_offline(documents: list[str], attn_implementation: str) -> BaseModel:
    tokenizer = train_tokenizer(documents)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        **OFFLINE_ARCHITECTURE,
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    shape = " ".join(f"{key}={value}" for key, value in OFFLINE_ARCHITECTURE.items())
    resolved = f"GPT-2 architecture from config ({shape}, vocab={len(tokenizer)} BPE trained on the snapshot)"
    return BaseModel(model, tokenizer, OFFLINE_KIND, resolved, "offline")


def load_pretrained(
    source: str | Path, tokenizer_source: str | Path, attn_implementation: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Weights in float32 whatever they were saved in: mixed precision casts per op, the master copy stays fp32."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, attn_implementation=attn_implementation)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 ships without one
    return model, tokenizer


def model_folder(path: Path, option: str) -> Path:
    """The save_pretrained() folder at or below `path` (a registered model may add a level)."""
    try:
        return find_model_dir(path)
    except ModelFolderError as error:
        raise BaseModelError(f"{option} {path}: not a model folder ({error})") from error


def load_local(path: Path, option: str, attn_implementation: str = "sdpa") -> BaseModel:
    folder = model_folder(path, option)
    try:
        model, tokenizer = load_pretrained(folder, find_tokenizer_dir(folder), attn_implementation)
    except (ModelFolderError, OSError, ValueError) as error:
        raise BaseModelError(f"{option} {path}: cannot load the model in {folder}: {error}") from error
    return BaseModel(model, tokenizer, str(path), str(folder.resolve()), "local")


def load_hub(model_id: str, attn_implementation: str) -> BaseModel:
    try:
        model, tokenizer = load_pretrained(model_id, model_id, attn_implementation)
    except OSError as error:
        reason = str(error).splitlines()[0]
        raise BaseModelError(
            f"--base-model {model_id}: cannot load it from the Hugging Face hub ({reason}). Without hub "
            f"access, use --base-model {OFFLINE_KIND} (GPT-2 architecture from a small config, tokenizer trained "
            f"on the snapshot) or --base-model <folder> holding a save_pretrained() model, e.g. a train "
            f"output or the registered model now serving."
        ) from error
    return BaseModel(model, tokenizer, model_id, model_id, "hub")


def resolve_base_model(requested: str, documents: list[str], attn_implementation: str = "sdpa") -> BaseModel:
    """`offline`, an existing folder, or else a hub id. `documents` train the offline tokenizer."""
    if requested == OFFLINE_KIND:
        base = build_offline(documents, attn_implementation)
    elif Path(requested).expanduser().exists():
        base = load_local(Path(requested).expanduser(), "--base-model", attn_implementation)
    elif requested.startswith(("/", ".", "~")):
        raise BaseModelError(
            f"--base-model {requested}: no such folder; give a save_pretrained() model "
            f"folder, a Hugging Face id, or {OFFLINE_KIND}"
        )
    else:
        base = load_hub(requested, attn_implementation)
    log.info("base model (%s): %s", base.kind, base.resolved)
    return base
