"""Is a document's text mostly English? GPT-2 is an English model, so other languages train it poorly.

Heuristic: the share of words that are common English function words. Running English text has
roughly 35-50% of them whatever its topic; German, Portuguese, Spanish, French and non-Latin
scripts have almost none, because the list leaves out words those languages share with English
("a", "in", "die", "was", "no", ...). No model, no dictionary download, fast on any length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENGLISH_FUNCTION_WORDS = frozenset(
    """
    the and of to is that for it with are this be by not or from at which have has had but were
    they their there been would could should can he she we you his her its our your them these
    those what when who whom all more other into than then about if only some such may any each
    how after over because between through where while does did up out very just most many my
    being both same own under again further once here why off against during before below above
    """.split()
)
# Below this share of function words the text is reported as not English.
MIN_ENGLISH_SHARE = 0.15
# Fewer words than this cannot be judged either way (titles, forms, tables of numbers).
MIN_WORDS = 30
_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class LanguageCheck:
    words: int
    english_share: float  # share of words that are common English function words

    @property
    def judged(self) -> bool:
        return self.words >= MIN_WORDS

    @property
    def mostly_english(self) -> bool:
        return not self.judged or self.english_share >= MIN_ENGLISH_SHARE


def check_english(text: str) -> LanguageCheck:
    words = _WORD.findall(text.casefold())
    if not words:
        return LanguageCheck(words=0, english_share=0.0)
    hits = sum(word in ENGLISH_FUNCTION_WORDS for word in words)
    return LanguageCheck(words=len(words), english_share=hits / len(words))
