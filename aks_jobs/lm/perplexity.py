"""How well a causal LM predicts some text: mean token loss, perplexity, and bits per UTF-8 byte.

Token perplexity depends on the tokenizer (a model with a coarser vocabulary predicts fewer, harder
tokens), so two models with different tokenizers are compared by bits per byte: the total negative
log-likelihood of the same text divided by its size in bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class TextScore:
    loss: float  # mean negative log-likelihood per predicted token, in nats
    perplexity: float  # exp(loss)
    bits_per_byte: float
    tokens: int  # predicted tokens
    bytes: int  # UTF-8 bytes of the scored text

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def windows(ids: list[int], context: int) -> list[list[int]]:
    """Windows of at most `context` tokens, each overlapping the previous by one token.

    Each window predicts all its tokens but the first, so every token of the text except its very
    first is predicted exactly once, as in training (blocks start without a separator token).
    """
    step = context - 1
    return [ids[start : start + context] for start in range(0, max(len(ids) - 1, 1), step)]


@torch.inference_mode()
def score_texts(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], batch_size: int = 8
) -> TextScore:
    texts = [text for text in texts if text]
    was_training = model.training
    model.eval()
    context = int(model.config.max_position_embeddings)
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    rows = [window for ids in encoded if len(ids) > 1 for window in windows(ids, context)]
    if not rows:
        raise ValueError("every text is a single token: nothing to predict")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        longest = max(map(len, batch))
        input_ids = torch.full((len(batch), longest), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        input_ids, mask = input_ids.to(model.device), mask.to(model.device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()
        targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        total_nll += F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="sum"
        ).item()
        total_tokens += int((targets != -100).sum())
    model.train(was_training)
    # The bytes predicted: all but each text's first token, which is context only.
    total_bytes = sum(
        len(text.encode("utf-8")) - len(tokenizer.decode(ids[:1]).encode("utf-8"))
        for text, ids in zip(texts, encoded, strict=True)
        if len(ids) > 1
    )
    loss = total_nll / total_tokens
    return TextScore(
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)),  # exp(>709) overflows a float
        bits_per_byte=total_nll / math.log(2) / total_bytes,
        tokens=total_tokens,
        bytes=total_bytes,
    )
