"""Document kinds as special tokens (seed 003): one added token `<|kind|>` per kind, never split, one id each.

The train step adds the snapshot's kinds to the tokenizer and grows the embeddings to match; the tokens are
saved with the tokenizer, so a model trained on from that folder, and the scoring server, know them too.
"""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pipeline_contracts.document_kinds import kind_token, token_kind


def model_kinds(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The kinds the tokenizer has a special token for, sorted."""
    return sorted({kind for token in tokenizer.extra_special_tokens if (kind := token_kind(str(token)))})


def add_kind_tokens(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, kinds: list[str]) -> list[str]:
    """Add a special token per kind the tokenizer lacks (keeping those it has, e.g. from an earlier model) and
    resize the model's embeddings to the tokenizer; returns every kind the tokenizer now knows."""
    # transformers 5: "extra_special_tokens" (formerly additional_special_tokens); False extends the list.
    added = tokenizer.add_special_tokens(
        {"extra_special_tokens": [kind_token(kind) for kind in kinds]}, replace_extra_special_tokens=False
    )
    if added or model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return model_kinds(tokenizer)
