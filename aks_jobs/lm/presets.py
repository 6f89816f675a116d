"""The training presets' values, plain Python (no torch), so the control plane can say what a run would use.

`default` is the design notebook's fine-tuning recipe; `memorize` its "sledgehammer" for tiny corpora.
Each preset has values for a pretrained base and for the offline base (random init, see base_model.py);
recipe.py turns them into TrainingArguments.
"""

from __future__ import annotations

from typing import Any

OFFLINE_KIND = "offline"  # base_model.py's kind (and BASE_MODEL value) of the randomly initialised base

PRETRAINED = {
    # The notebook: 3 epochs, lr 5e-5, weight decay 0.01, batch 4 x accumulation 8 (32 blocks a step),
    # evaluate and save every epoch, keep the best epoch.
    "default": dict(
        epochs=3.0,
        learning_rate=5e-5,
        weight_decay=0.01,
        batch_size=4,
        grad_accum=8,
        best_epoch=True,
        line_blocks=False,
    ),
    # The notebook's "sledgehammer": 20 epochs at lr 2e-4, batch 4, no checkpoints. Nothing is held
    # out (the notebook's own fallback: evaluate on the training blocks): the point is to recall every
    # line, and a held-out passage would never be learned.
    "memorize": dict(
        epochs=20.0,
        learning_rate=2e-4,
        weight_decay=0.0,
        batch_size=4,
        grad_accum=1,
        best_epoch=False,
        line_blocks=False,
        eval_fraction=0.0,
    ),
}
FROM_SCRATCH = {
    # Fine-tuning rates barely move randomly initialised weights in 3 epochs; 1e-3 is the usual rate
    # for a model this small trained from scratch (nanoGPT's character-level Shakespeare uses it).
    "default": dict(learning_rate=1e-3),
    # A random init does not recall a fact with the sledgehammer's settings: smaller steps, twice the
    # epochs (measurements: docs/performance.md#training-presets). Blocks start at every line, since a
    # randomly initialised model recalls text only from the position it saw it at, and a prompt starts at 0.
    "memorize": dict(epochs=40.0, learning_rate=1e-3, batch_size=1, line_blocks=True),
}
COMMON = dict(
    warmup_ratio=0.0,
    eval_fraction=0.05,
    seed=42,
    max_steps=None,
    max_wall_s=None,
    block_size=None,
    micro_batch=None,
    compile="auto",
    response_only_loss=False,
)
PRESETS = tuple(PRETRAINED)


def preset_values(preset: str, base_kind: str) -> dict[str, Any]:
    """Every setting of `preset` for a base of this kind (OFFLINE_KIND or a pretrained one)."""
    return {**COMMON, **PRETRAINED[preset], **(FROM_SCRATCH[preset] if base_kind == OFFLINE_KIND else {})}
