"""Turn pypdf's raw page text into the clean text a person would expect to train on.

Each rule is its own function so it can be tested alone; `clean_document` applies them in order:
per page (newlines, Unicode, control characters, spaces), then across pages (repeated header and
footer lines), then on the joined text (words hyphenated across line breaks, blank-line runs).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter

# Presentation-form ligatures (U+FB00..U+FB06) come out of many PDF fonts; NFC keeps them, and
# NFKC would also rewrite superscripts, fractions and full-width forms, so expand only these.
_LIGATURES = str.maketrans(
    {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st"}
)
_SOFT_HYPHEN = "\u00ad"
_INVISIBLE = ("Cc", "Cf", "Cs", "Co")  # control, format, lone surrogate, private use
# Characters that cannot be invisible ones: ASCII printables, \n, \t and Latin..Hebrew (checked in
# tests). Only the rest is looked up, which keeps English text fast.
_MAYBE_INVISIBLE = re.compile(r"[^\t\n\x20-\x7e\u00a0-\u00ac\u00ae-\u05ff]")
_BLANK_LINE_RUNS = re.compile(r"\n{3,}")
# A word broken at a line end with a hyphen (ASCII, U+2010 or a soft hyphen turned hyphen below).
# The hyphen comes first and the letter before it is a lookbehind, so the scan looks for hyphens (rare)
# rather than testing every letter: 7x faster.
_HYPHEN_BREAK = re.compile(r"[-\u2010](?<=[^\W\d_].)[ \t]*\n[ \t]*(?=([^\W\d_]))")
# Numbers short enough to be page numbers; longer digit runs are ids, phone numbers and the like.
_NUMBERS = re.compile(r"(?<!\d)\d{1,5}(?!\d)")

# How many non-empty lines at the top and bottom of a page can be a header or footer.
EDGE_LINES = 3
# Below this many pages a line repeating on "most pages" could just as well be content.
MIN_PAGES_FOR_HEADERS = 3


def normalize_newlines(text: str) -> str:
    """\\r\\n, \\r, form feeds and Unicode line/paragraph separators all become \\n."""
    return re.sub(r"\r\n?|[\f\v\u2028\u2029\x85]", "\n", text)


def normalize_unicode(text: str) -> str:
    """NFC (composed accents, so one letter is one character) and expanded ligatures."""
    return unicodedata.normalize("NFC", text).translate(_LIGATURES)


def drop_control_characters(text: str) -> str:
    """Drop control and format characters (NUL, BEL, zero-width spaces, BOM...), keeping \\n and \\t.

    A soft hyphen at a line end marks a hyphenation point, so it becomes a real hyphen there (for
    `join_hyphenated_words`); anywhere else it is invisible and dropped.
    """
    text = re.sub(_SOFT_HYPHEN + r"(?=[ \t]*\n)", "-", text)
    return _MAYBE_INVISIBLE.sub(_drop_if_invisible, text)


def _drop_if_invisible(match: re.Match[str]) -> str:
    return "" if unicodedata.category(match[0]) in _INVISIBLE else match[0]


def collapse_whitespace(text: str) -> str:
    """Runs of spaces become one space, lines are stripped, and blank lines shrink to one.

    A single blank line is a paragraph break and is kept; leading/trailing blank lines go.
    """
    # str.split() (C, str.isspace's set) per line: half the time of one whole-text regex over every space.
    text = "\n".join([" ".join(line.split()) for line in text.split("\n")])
    return _BLANK_LINE_RUNS.sub("\n\n", text).strip("\n")


def join_hyphenated_words(text: str) -> str:
    """Rejoin words split across a line break: "exam-\\nple" -> "example".

    When the next line starts with a capital the hyphen is real ("Anglo-\\nSaxon" -> "Anglo-Saxon"),
    so only the line break goes.
    """

    def join(match: re.Match[str]) -> str:
        return "" if match.group(1).islower() else "-"

    return _HYPHEN_BREAK.sub(join, text)


def _edge_keys(line: str, page_number: int) -> set[tuple[str, int | None]]:
    """What makes a line "the same" on other pages: its text, or its text around a page number.

    A running title repeats verbatim. A page number changes, but in step with the page: on the
    page at position p it is p + offset for a fixed offset, so the key masks the digits and keeps
    that offset. Lines whose numbers do not follow the pages ("Total 12 units") stay distinct.
    """
    text = line.casefold()
    masked = _NUMBERS.sub("#", text)
    return {(text, None)} | {(masked, int(number) - page_number) for number in _NUMBERS.findall(text)}


def _edges(lines: list[str]) -> tuple[list[int], list[int]]:
    """Indexes of the first and of the last EDGE_LINES non-empty lines, each read from its page edge."""
    filled = [i for i, line in enumerate(lines) if line]
    return filled[:EDGE_LINES], filled[::-1][:EDGE_LINES]


def drop_repeated_edge_lines(pages: list[list[str]], share: float = 0.5) -> list[list[str]]:
    """Remove header/footer lines: lines at the top or bottom that repeat on most pages.

    "Most" means more than `share` of the pages and at least MIN_PAGES_FOR_HEADERS of them; a
    line also counts as repeated when only its page number changes ("Page 3 of 10"). Only runs of
    repeated lines starting at a page edge go: the first line that is not repeated is content, and
    so is everything between it and the middle of the page. Documents with fewer pages are left
    alone (on one or two pages a repeated line is as likely content as a header), and so is a
    document whose every line would go (the same short page repeated).
    """
    if len(pages) < MIN_PAGES_FOR_HEADERS:
        return [list(lines) for lines in pages]
    edge_keys = []
    for page_number, lines in enumerate(pages, start=1):
        top, bottom = _edges(lines)
        edge_keys.append({i: _edge_keys(lines[i], page_number) for i in top + bottom})
    seen_on = Counter(key for keys in edge_keys for key in set().union(*keys.values()))
    needed = max(MIN_PAGES_FOR_HEADERS, math.floor(len(pages) * share) + 1)
    repeated = {key for key, count in seen_on.items() if count >= needed}
    cleaned = []
    for lines, keys in zip(pages, edge_keys, strict=True):
        drop: set[int] = set()
        for edge in _edges(lines):
            for i in edge:
                if not keys[i] & repeated:
                    break
                drop.add(i)
        cleaned.append([line for i, line in enumerate(lines) if i not in drop])
    if not any(line for lines in cleaned for line in lines):
        return [list(lines) for lines in pages]
    return cleaned


def clean_page(text: str) -> list[str]:
    """One page's raw text -> its tidy lines (blank lines kept as paragraph breaks)."""
    text = normalize_unicode(normalize_newlines(text))
    return collapse_whitespace(drop_control_characters(text)).split("\n")


def clean_document(pages: list[str]) -> str:
    """All pages of one document -> one contiguous, cleaned text ("" when there is none)."""
    kept = drop_repeated_edge_lines([clean_page(page) for page in pages])
    text = "\n".join("\n".join(lines) for lines in kept if any(lines))
    # Pages' lines are already collapsed and joining hyphenated words adds no spaces: only blank-line runs
    # (where edge lines were dropped) are left to shrink.
    return _BLANK_LINE_RUNS.sub("\n\n", join_hyphenated_words(text)).strip("\n")
