"""A real browser for the web UI's tests: Debian's chromium driven by Playwright, never downloaded.

One browser per test session (per xdist worker), started on first use. It lives in a
thread of its own: Playwright's sync API marks its thread as running an event loop,
which would stop pytest-asyncio's tests in the same worker. Tests hand it functions
(`Browser.visit`) that get a fresh page in a fresh context (no cookies shared).
Screenshots go to `screenshots/` at the top of the checkout (git ignores it).
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import re
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

import requests

CHROMIUM = "/usr/bin/chromium"
#: headless, and nothing that reaches out to the network (the machine has none, and
#: chromium's own background connections would only be refused)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
#: Playwright's wait for an element or a navigation, and for an expect() to come true, in milliseconds
#: (a deadline, not a speed limit: on a busy machine pages take longer)
TIMEOUT_MS = 30_000
EXPECT_MS = 15_000
T = TypeVar("T")


class Browser:
    def __init__(self) -> None:
        if not os.path.exists(CHROMIUM):
            raise RuntimeError(f"{CHROMIUM} is missing: run `make test`, which installs Debian's chromium")
        self._calls: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="browser", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        from playwright.sync_api import expect, sync_playwright

        expect.set_options(timeout=EXPECT_MS)
        with sync_playwright() as playwright:
            browser = None
            while (call := self._calls.get()) is not None:
                fn, future = call
                try:
                    if browser is None:
                        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                             args=CHROMIUM_ARGS)
                    future.set_result(fn(browser))
                except BaseException as exc:  # handed to the test's thread
                    future.set_exception(exc)
            if browser is not None:
                browser.close()

    def run(self, fn: Callable[[Any], T]) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._calls.put((fn, future))
        return future.result()

    def visit(self, fn: Callable[[Any], T], **context: Any) -> T:
        """fn(page) on a new page in a new browser context (its own cookies)."""

        def in_context(browser: Any) -> T:
            ctx = browser.new_context(viewport={"width": 1280, "height": 900}, **context)
            ctx.set_default_timeout(TIMEOUT_MS)
            try:
                return fn(ctx.new_page())
            finally:
                ctx.close()

        return self.run(in_context)

    def close(self) -> None:
        self._calls.put(None)
        self._thread.join(timeout=60)


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)



# --- the UI over plain HTTP (what a browser would send, for the checks that need no page) -------

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def ui_session(url: str, verify: str | bool = True) -> tuple[requests.Session, str]:
    """A session that opened the login page: its cookie and the CSRF token of its forms."""
    session = requests.Session()
    session.verify = verify
    r = session.get(f"{url}/ui/login", timeout=30)
    assert r.status_code == 200, r.text
    return session, csrf_of(r.text)


def ui_login(url: str, user: str = "", password: str = "", token: str = "") -> requests.Session:
    session, csrf = ui_session(url)
    r = session.post(f"{url}/ui/login", data={"csrf": csrf, "username": user, "password": password, "token": token},
                     allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    return session
