"""Debian's Chromium driven by Playwright (async API); never a downloaded browser."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, Page, Playwright

CHROMIUM = Path("/usr/bin/chromium")
MISSING = "install Debian's chromium: apt-get install chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--allow-loopback-in-peer-connection",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--autoplay-policy=no-user-gesture-required",
]


async def launch_chromium(playwright: Playwright) -> Browser:
    return await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@contextlib.asynccontextmanager
async def open_page(browser: Browser, origin: str) -> AsyncIterator[Page]:
    """A fresh context with camera/microphone granted for `origin` (which also turns off mDNS
    host candidates, so WebRTC stays on 127.0.0.1), and one page in it. Console errors and
    page errors are collected on `page.errors` (a list of strings) for assertions."""
    context = await browser.new_context()
    try:
        await context.grant_permissions(["camera", "microphone"], origin=origin.rstrip("/"))
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.errors = errors  # type: ignore[attr-defined]
        yield page
    finally:
        await context.close()
