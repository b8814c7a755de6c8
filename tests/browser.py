"""Debian's Chromium, driven by Playwright, for the pages' browser tests.

The system's browser (``make browser`` installs it), never one Playwright downloads.
Without it a test fails, saying so; it never skips.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright
from playwright.sync_api import Error as PlaywrightError

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@contextmanager
def chromium_for(what: str) -> Iterator[Browser]:
    """A headless Chromium for ``what`` ("the widget's browser tests"...), closed after."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium is required for {what} and is not at {CHROMIUM}. "
            "`make browser` installs it (apt-get install chromium); or point CHROMIUM at one.",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"], timeout=60_000
            )
        except PlaywrightError as exc:
            pytest.fail(
                f"Chromium at {CHROMIUM} could not be started for {what}: {exc}", pytrace=False
            )
        try:
            yield browser
        finally:
            browser.close()
