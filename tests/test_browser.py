"""The chat example in a real headless Chromium running the real Turbo 8.

Two pages, as two people, open the chat; a message sent through the form of
one shows in both, applied by Turbo from the WebSocket stream, with no reload.

Needs Debian's Chromium (``/usr/bin/chromium``, or ``CHROMIUM``), Python
Playwright (never ``playwright install``: it launches the system browser),
and npm, which installs the pinned Turbo of ``tests/browser/package.json``.
Without them the test is skipped, or fails when ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
TURBO_VERSION = "8.0.23"
TURBO_JS = BROWSER_DIR / "node_modules" / "@hotwired" / "turbo" / "dist" / "turbo.es2017-umd.js"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000


def unavailable(reason: str):
    """Skip, or fail under CI, where the browser test must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser test must run)", pytrace=False)
    pytest.skip(reason)


def installed_turbo_version() -> str | None:
    try:
        package = json.loads((TURBO_JS.parents[1] / "package.json").read_text())
    except (OSError, ValueError):
        return None
    return package.get("version")


@pytest.fixture(scope="module")
def turbo_js() -> Path:
    """The pinned Turbo build, installed with ``npm ci`` if it is not yet."""
    if TURBO_JS.is_file() and installed_turbo_version() == TURBO_VERSION:
        return TURBO_JS
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed: it is needed to install @hotwired/turbo")
    try:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=BROWSER_DIR,
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.CalledProcessError as exc:
        unavailable(f"npm ci failed in {BROWSER_DIR}: {exc.stderr.strip()[-2000:]}")
    except subprocess.TimeoutExpired:
        unavailable(f"npm ci timed out in {BROWSER_DIR}")
    version = installed_turbo_version()
    assert TURBO_JS.is_file() and version == TURBO_VERSION, f"npm installed Turbo {version}, not {TURBO_VERSION}"
    return TURBO_JS


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright."""
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Python Playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def chat(turbo_js):
    """The chat example in a real ``turbo-gevent`` process."""
    env = {"TURBO_JS_PATH": str(turbo_js), "TURBO_SECRET": "browser-test-secret"}
    with ServerProcess("examples.chat.app:app", env=env) as server:
        yield server


class Person:
    """One person: a fresh browser context (own cookies) with the chat open."""

    def __init__(self, browser, url: str):
        self.context = browser.new_context()
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on(
            "console", lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None
        )
        self.page.goto(url)
        # Turbo itself: a script that failed to load would leave it undefined.
        assert self.page.evaluate("typeof Turbo === 'object' && Turbo.session !== undefined")
        # Survives Turbo Drive visits and stream actions, not a full reload.
        self.page.evaluate("window.sameDocument = true")

    def messages(self, text: str):
        return self.page.locator("#messages .message", has_text=text)

    def has_message(self, text: str) -> bool:
        return self.messages(text).count() > 0

    def same_document(self) -> bool:
        return self.page.evaluate("window.sameDocument === true")

    def close(self):
        self.context.close()


def wait_until_listening(server: ServerProcess, people: list[Person], timeout: float = 15.0) -> None:
    """Post probe messages until one has reached every page through its stream.

    A page has no "connected" signal; the pages were loaded before the first
    probe was posted, so a probe that shows in one came over its WebSocket.
    """
    marker = f"probe-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        status, _ = server.post("/messages", name="probe", text=f"{marker}-{attempt}")
        assert status == 200, f"posting a probe answered {status}"
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle:
            if all(person.has_message(marker) for person in people):
                return
            time.sleep(0.05)
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no probe reached every page within {timeout}s "
                f"({[person.has_message(marker) for person in people]})\n{server.stderr()}"
            )


def test_a_message_posted_in_one_page_shows_in_every_page(browser, chat):
    from playwright.sync_api import expect

    alice = Person(browser, chat.url + "/")
    bob = Person(browser, chat.url + "/")
    try:
        for person in (alice, bob):
            src = person.page.locator("turbo-stream-source").get_attribute("src")
            assert re.fullmatch(rf"ws://127\.0\.0\.1:{chat.port}/turbo-stream\?stream=[\w.\-]+", src), src

        wait_until_listening(chat, [alice, bob])

        text = f"Hello <b>Bob</b> & all {uuid.uuid4().hex[:6]}"
        alice.page.fill("input[name=name]", "Alice")
        alice.page.fill("input[name=text]", text)
        alice.page.click("button[type=submit]")

        for person in (bob, alice):
            expect(person.messages(text)).to_have_count(1, timeout=TIMEOUT_MS)
            message = person.messages(text)
            # Escaped: the markup typed shows as text and makes no element.
            expect(message).to_contain_text(text)
            expect(message.locator("b")).to_have_count(0)
            expect(message.locator(".name")).to_have_text("Alice")

        # Bob's page was changed in place by the stream, not reloaded.
        assert bob.same_document()
        # Alice's form went through Turbo Drive (303, then a visit with no
        # reload), which emptied the text and kept her name from the cookie.
        assert alice.same_document()
        expect(alice.page.locator("input[name=text]")).to_have_value("")
        expect(alice.page.locator("input[name=name]")).to_have_value("Alice")

        assert alice.errors == [] and bob.errors == [], alice.errors + bob.errors
    finally:
        alice.close()
        bob.close()
