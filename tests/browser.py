"""A real headless Chromium (Debian's ``/usr/bin/chromium``) driven by Playwright, for tests.

Use it as ``async with headless_browser() as browser: page = await browser.new_page()``.
Each launch gets a fresh profile (Playwright's own temporary user data dir) and is closed,
with its process, when the block ends. No browser is ever downloaded: a missing Chromium
fails the test with the package to install.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = os.environ.get("RPORTD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@asynccontextmanager
async def headless_browser() -> AsyncIterator[Browser]:
    """A headless Chromium (``browser.new_context(ignore_https_errors=True)`` for test certs)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (tests/setup/system-packages.sh)"
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_FLAGS)
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def browser_page(width: int = 1100, height: int = 520) -> AsyncIterator[Page]:
    """A page of the given size in a fresh headless Chromium; closed afterwards."""
    async with headless_browser() as browser:
        context = await browser.new_context(viewport={"width": width, "height": height})
        yield await context.new_page()
