"""A real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@asynccontextmanager
async def browser_page(width: int = 1100, height: int = 520) -> AsyncIterator[Page]:
    """A page in a fresh headless Chromium profile; the browser is closed afterwards."""
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: run tests/setup/system-packages.sh"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        try:
            context = await browser.new_context(viewport={"width": width, "height": height})
            yield await context.new_page()
        finally:
            await browser.close()
