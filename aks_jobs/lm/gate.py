"""The promotion gate: does the candidate replace the model now serving?

The comparison uses bits per byte of the same held-out text, which holds across tokenizers (an
offline base trains its own); token perplexity is reported beside it and can cap the candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

from aks_jobs.lm.perplexity import TextScore


@dataclass(frozen=True)
class Rules:
    min_improvement: float = 0.0  # relative drop in bits per byte the candidate must reach; 0: any drop
    max_perplexity: float | None = None  # the candidate's token perplexity must not exceed this


@dataclass(frozen=True)
class Decision:
    decision: str  # promote | reject
    reason: str
    improvement: float | None  # relative drop in bits per byte against the serving model


def _figures(score: TextScore) -> str:
    return f"{score.bits_per_byte:.4f} bits/byte (perplexity {score.perplexity:.2f})"


def decide(candidate: TextScore, serving: TextScore | None, rules: Rules) -> Decision:
    improvement = None if serving is None else (serving.bits_per_byte - candidate.bits_per_byte) / serving.bits_per_byte
    if rules.max_perplexity is not None and candidate.perplexity > rules.max_perplexity:
        return Decision(
            "reject",
            f"Rejected: the candidate's perplexity {candidate.perplexity:.2f} is above the "
            f"limit {rules.max_perplexity:g} ({_figures(candidate)} on the held-out text).",
            improvement,
        )
    if serving is None:
        return Decision(
            "promote",
            f"Promoted: no model is serving; the candidate scores {_figures(candidate)} "
            f"on {candidate.bytes} held-out bytes.",
            None,
        )
    needed = f"at least {rules.min_improvement:.1%}" if rules.min_improvement > 0 else "any improvement"
    if improvement > 0 and improvement >= rules.min_improvement:
        return Decision(
            "promote",
            f"Promoted: the candidate's {_figures(candidate)} beats the serving model's "
            f"{_figures(serving)} by {improvement:.1%} (needed {needed}).",
            improvement,
        )
    return Decision(
        "reject",
        f"Rejected: the candidate's {_figures(candidate)} against the serving model's "
        f"{_figures(serving)} is a {improvement:+.1%} change (needed {needed}); "
        f"the serving model stays.",
        improvement,
    )
