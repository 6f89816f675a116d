"""Each cleaning rule on its own, then the whole per-document cleaner, then the English check."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from aks_jobs.pdf_text.clean import (
    clean_document,
    clean_page,
    collapse_whitespace,
    drop_control_characters,
    drop_repeated_edge_lines,
    join_hyphenated_words,
    normalize_newlines,
    normalize_unicode,
)
from aks_jobs.pdf_text.language import check_english
from synthetic_data.pdfs import ENGLISH_TEXT, GERMAN_TEXT, PORTUGUESE_TEXT


def test_newlines_of_every_kind_become_line_feeds() -> None:
    assert normalize_newlines("a\r\nb\rc\fd\u2028e\u2029f") == "a\nb\nc\nd\ne\nf"


def test_unicode_is_composed_nfc_and_ligatures_are_expanded() -> None:
    decomposed = "cafe\u0301 na\u0303o"
    assert normalize_unicode(decomposed) == "café não"
    assert len(normalize_unicode(decomposed)) == len("café não")
    assert normalize_unicode("ﬁnal ﬂow eﬀort") == "final flow effort"
    assert normalize_unicode("x² ½") == "x² ½"  # NFC, not NFKC: superscripts and fractions stay


def test_control_and_invisible_format_characters_are_dropped() -> None:
    assert drop_control_characters("a\x00b\x07c\x1bd") == "abcd"
    assert drop_control_characters("zero\u200bwidth\ufeff") == "zerowidth"
    assert drop_control_characters("keep\nnew\tlines") == "keep\nnew\tlines"


def test_soft_hyphen_becomes_a_hyphen_only_at_a_line_break() -> None:
    assert drop_control_characters("hyphen\u00adation") == "hyphenation"
    assert drop_control_characters("every\u00ad\nbody") == "every-\nbody"


def test_whitespace_collapses_but_one_blank_line_stays_as_paragraph_break() -> None:
    text = "  two   spaces\tand\u00a0nbsp  \n\n\n\nnext   paragraph \n"
    assert collapse_whitespace(text) == "two spaces and nbsp\n\nnext paragraph"
    assert collapse_whitespace("\n\n first\nsecond\n\n") == "first\nsecond"


def test_words_hyphenated_across_a_line_break_are_joined() -> None:
    assert join_hyphenated_words("an exam-\nple of it") == "an example of it"
    assert join_hyphenated_words("inter-  \n  national") == "international"
    assert join_hyphenated_words("a-\nb-\nc") == "abc"


def test_real_hyphens_numbers_and_paragraph_ends_are_left_alone() -> None:
    assert join_hyphenated_words("Anglo-\nSaxon") == "Anglo-Saxon"  # capital: the hyphen is real
    assert join_hyphenated_words("1990-\n2000") == "1990-\n2000"
    assert join_hyphenated_words("a list -\nitem") == "a list -\nitem"
    assert join_hyphenated_words("end-\n\nnew paragraph") == "end-\n\nnew paragraph"
    assert join_hyphenated_words("well-known words") == "well-known words"


def _pages(count: int, header: str = "ACME Annual Report", footer: str = "Page {n} of {total}") -> list[list[str]]:
    return [
        [
            header,
            f"Body line one, about topic {n * 7}.",
            f"Body line two, item {n * n}.",
            footer.format(n=n, total=count),
        ]
        for n in range(1, count + 1)
    ]


def test_headers_and_footers_repeating_on_most_pages_are_dropped() -> None:
    cleaned = drop_repeated_edge_lines(_pages(5))
    assert cleaned == [[f"Body line one, about topic {n * 7}.", f"Body line two, item {n * n}."] for n in range(1, 6)]


def test_page_numbers_with_an_offset_are_recognised() -> None:
    pages = [[f"Chapter text number {'abcde'[n]}.", f"- {n + 10} -"] for n in range(5)]
    assert drop_repeated_edge_lines(pages) == [[f"Chapter text number {'abcde'[n]}."] for n in range(5)]


def test_lines_whose_numbers_do_not_follow_the_pages_are_content() -> None:
    pages = [[f"Opening words {'abcde'[n]}.", f"Total: {n * 13 + 5} units"] for n in range(5)]
    assert drop_repeated_edge_lines(pages) == pages


def test_bare_page_numbers_are_dropped_even_though_the_digits_differ() -> None:
    pages = [[f"Text of page {n} is different: {'abcdefgh'[n]}.", str(n)] for n in range(1, 6)]
    expected = [[f"Text of page {n} is different: {'abcdefgh'[n]}."] for n in range(1, 6)]
    assert drop_repeated_edge_lines(pages) == expected


def test_one_and_two_page_documents_keep_every_line() -> None:
    for count in (1, 2):
        pages = _pages(count)
        assert drop_repeated_edge_lines(pages) == pages


def test_a_line_repeated_on_only_a_minority_of_pages_is_content() -> None:
    pages = [[f"Opening {'abcde'[n]}.", f"Middle {'fghij'[n]}.", f"Closing {'klmno'[n]}."] for n in range(5)]
    pages[0][0] = pages[1][0] = "Chapter One"
    assert drop_repeated_edge_lines(pages) == pages


def test_a_repeated_line_in_the_middle_of_long_pages_is_content() -> None:
    pages = [
        [f"Line {chr(97 + i)} of page {chr(97 + n)}." for i in range(4)]
        + ["Repeated sentence."]
        + [f"Tail {chr(97 + i)} of page {chr(97 + n)}." for i in range(4)]
        for n in range(4)
    ]
    assert drop_repeated_edge_lines(pages) == pages


def test_a_document_of_identical_pages_is_kept_whole() -> None:
    pages = [["Same form title", "Same form body"]] * 4
    assert drop_repeated_edge_lines(pages) == pages


def test_clean_page_tidies_one_page() -> None:
    assert clean_page("  Title\r\n\r\n\r\nBody\x00 text\u00a0here  ") == ["Title", "", "Body text here"]


def test_clean_document_joins_pages_contiguously_and_rejoins_words_split_across_pages() -> None:
    pages = [
        "Running Title\nFirst page text with a hyphen-\nated word and a long sen-\nPage 1",
        "Running Title\ntence that continues here.\n\nA new paragraph.\nPage 2",
        "Running Title\nLast page.\nPage 3",
    ]
    assert clean_document(pages) == (
        "First page text with a hyphenated word and a long sentence that continues here.\n\n"
        "A new paragraph.\nLast page."
    )


def test_clean_document_skips_empty_pages_without_inventing_paragraph_breaks() -> None:
    assert clean_document(["one", "   \n ", "two"]) == "one\ntwo"
    assert clean_document(["", " "]) == ""


def test_english_text_is_recognised_and_other_languages_are_not() -> None:
    assert check_english(ENGLISH_TEXT).mostly_english
    assert check_english(ENGLISH_TEXT).english_share > 0.3
    for text in (PORTUGUESE_TEXT, GERMAN_TEXT):
        check = check_english(text)
        assert check.judged and not check.mostly_english, check


def test_too_little_text_is_not_judged_non_english() -> None:
    check = check_english("Relatório anual 2024")
    assert not check.judged and check.mostly_english


def test_only_repeated_lines_touching_the_page_edge_go() -> None:
    # "Same sentence" repeats, but below a line that does not: it is content, not a header.
    pages = [["Running head", f"Opening {'abcde'[n]}.", "Same sentence.", f"Body {'fghij'[n]}."] for n in range(5)]
    assert drop_repeated_edge_lines(pages) == [page[1:] for page in pages]


def test_every_invisible_character_is_dropped_and_every_visible_one_kept() -> None:
    # Exhaustive over the Basic Multilingual Plane, so the fast path in drop_control_characters
    # can never skip a character that should go or drop one that should stay.
    kept = {"\n", "\t"}
    everything = "".join(chr(code) for code in range(0x10000) if chr(code) != "\u00ad")
    expected = "".join(
        ch for ch in everything if ch in kept or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co")
    )
    assert drop_control_characters(everything) == expected
    assert drop_control_characters("private \U000f0001use and tag \U000e0041end") == "private use and tag end"


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab \t\n\r\x0b\x1c\x1f\u00a0\u2009\u3000"))))
def test_collapse_whitespace_is_the_line_by_line_definition(text: str) -> None:
    # The definition: each line's whitespace runs become one space and the line is stripped; blank-line
    # runs shrink to one; no blank lines at either end. The function does it on the whole text at once.
    lines = [re.sub(r"[^\S\n]+", " ", line).strip() for line in text.split("\n")]
    assert collapse_whitespace(text) == re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("ab Ab-\t\n\r\u00a0\u00ad12")), max_size=60), max_size=6))
def test_a_cleaned_document_has_its_whitespace_collapsed(pages: list[str]) -> None:
    cleaned = clean_document(pages)
    assert collapse_whitespace(cleaned) == cleaned


def test_dropped_headers_and_footers_leave_one_blank_line_between_pages() -> None:
    pages = [f"Annual report\n\ncontent {n}\n\nPage {i} of 3" for i, n in enumerate(("one", "two", "three"), 1)]
    assert clean_document(pages) == "content one\n\ncontent two\n\ncontent three"
