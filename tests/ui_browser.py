"""Headless Debian chromium driven by Playwright for the UI browser tests, and where screenshots go.

Browsers are never downloaded (`playwright install` is not used): the Makefile's test target installs
Debian's chromium (apt-get install -y chromium), and Playwright drives that executable.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO_ROOT / "out" / "screenshots"
_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # Tall: Streamlit scrolls inside its own container, so a screenshot shows only the viewport.
    context = browser.new_context(viewport={"width": 1400, "height": 2000})
    yield context.new_page()
    context.close()


def upload(page: Page, *files: Path) -> None:
    """Drop files on the Knowledge Base uploader (the input behind its drag-and-drop zone)."""
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([str(f) for f in files])


def open_chat(page: Page) -> None:
    page.get_by_role("link", name="Chat").click()
    expect(page.get_by_test_id("stChatInput")).to_be_visible()


def send(page: Page, prompt: str) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(prompt)
    box.press("Enter")


_DRAWN = """() => !document.querySelector('[data-testid="stSkeleton"]')
    && [...document.querySelectorAll('[data-testid="stDataFrame"]')]
        .every(frame => frame.querySelector('[data-testid="data-grid-canvas"]'))"""


def screenshot(page: Page, name: str) -> Path:
    """Save the page once its lazily drawn parts (tables) have been on screen for a moment: fragments
    that refresh by themselves redraw them, so one look is not enough."""
    deadline = time.monotonic() + 30
    steady = 0
    while steady < 3 and time.monotonic() < deadline:
        steady = steady + 1 if page.evaluate(_DRAWN) else 0
        page.wait_for_timeout(200)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def choose(page: Page, label: str, option: str) -> None:
    """Pick `option` in a selectbox; again if a rerun of the page (a busy machine's) swallowed the pick."""
    box = page.get_by_role("combobox", name=label)
    for _ in range(3):
        try:
            box.click()
            page.get_by_role("option", name=option).click(timeout=10_000)
            expect(box).to_have_value(option, timeout=10_000)
            return
        except (PlaywrightTimeoutError, AssertionError):
            continue
    raise AssertionError(f"could not choose {option!r} in {label!r}")
