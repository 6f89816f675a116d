"""A tiny GPT-2 (random weights, byte-level BPE trained on a few sentences) saved like a train.py output."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

from pipeline_contracts.document_kinds import END_OF_TEXT

TINY_TEXT = (
    "Diogo is the supreme leader of the alien colony Dinosaurus.\n"
    "The quick brown fox jumps over the lazy dog.\n"
    "Declaration: the documents describe a pipeline that fine-tunes GPT-2 on PDF text.\n"
)


def make_tiny_model(directory: Path, text: str = TINY_TEXT, *, n_positions: int = 128, seed: int = 0) -> Path:
    """Save a 2-layer, 64-wide GPT-2 and its tokenizer with save_pretrained into `directory`; return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        text.splitlines(), vocab_size=300, min_frequency=1, special_tokens=[END_OF_TEXT], show_progress=False
    )
    bpe.save_model(str(directory))  # vocab.json + merges.txt, the files GPT2Tokenizer reads
    tokenizer = GPT2Tokenizer(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"))

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
