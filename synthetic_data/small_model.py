"""A small GPT-2 trained here on generated prose, saved like a train.py output: for checks that need a model whose
predictions mean something (e.g. the perplexity cost of int8 weights), where random weights would hide it."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from aks_jobs.lm.base_model import train_tokenizer
from synthetic_data.prose import prose


def train_small_model(
    directory: Path,
    *,
    text: str | None = None,
    n_layer: int = 2,
    n_embd: int = 64,
    steps: int = 150,
    block: int = 64,
    batch: int = 16,
    seed: int = 0,
) -> Path:
    """Train a GPT-2 (byte-level BPE learned from the text) on random blocks of `text`; save it into `directory`."""
    text = text if text is not None else prose(seed=1, sentences=3000)
    tokenizer = train_tokenizer(text.splitlines(), vocab_size=512)
    ids = torch.tensor(tokenizer(text, verbose=False)["input_ids"])
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=max(1, n_embd // 32),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - block, (batch,))
        blocks = torch.stack([ids[start : start + block] for start in starts.tolist()])
        loss = model(input_ids=blocks, labels=blocks).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)
