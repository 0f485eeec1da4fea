"""The chat example in a real headless Chromium running the real Turbo 8.

Two pages, as two people, open the chat; a message sent through the form of
one shows in both, applied by Turbo from the WebSocket stream, with no reload.
A private note shows in every tab of its sender and in nobody else's. Under
gunicorn with two workers and Redis, two pages whose WebSockets are served by
different workers see each other's messages, and both workers show the same
history.

Needs Debian's Chromium (``/usr/bin/chromium``, or ``CHROMIUM``), Python
Playwright (never ``playwright install``: it launches the system browser),
and npm, which installs the pinned Turbo of ``tests/browser/package.json``;
the gunicorn test also needs ``redis-server`` and gunicorn. Without them the
tests are skipped, or fail when ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.redis_server import running_redis
from tests.support.gunicorn import GunicornProcess
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
# Generous: the machines running these tests may be busy (two cores).
TIMEOUT_MS = 20_000
SECRET = "browser-test-secret"


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


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:8]}"


# -- the chat, served -----------------------------------------------------------


@pytest.fixture
def chat(turbo_js):
    """The chat example in a real ``turbo-gevent`` process, history in memory."""
    # Empty, not absent: a REDIS_URL that tox passes through must not reach it.
    env = {"TURBO_JS_PATH": str(turbo_js), "TURBO_SECRET": SECRET, "REDIS_URL": "", "CHAT_DEBUG": ""}
    with ServerProcess("examples.chat.app:app", env=env) as server:
        yield server


class GunicornChat(GunicornProcess):
    """The chat example under gunicorn: turbo_gevent workers sharing one Redis.

    ``debug()`` answers the example's ``/_debug/connections`` of whichever
    worker accepted the request.
    """

    def __init__(self, env: dict, workers: int = 2):
        super().__init__("examples.chat.app:app", env=env, workers=workers, graceful_timeout=5)

    def debug(self) -> dict:
        """One sample: a new TCP connection, accepted by any of the workers."""
        with urllib.request.urlopen(self.url + "/_debug/connections", timeout=10) as response:
            return json.loads(response.read())


@pytest.fixture
def redis_server():
    yield from running_redis()


@pytest.fixture
def gunicorn_chat(turbo_js, redis_server):
    """The chat example under gunicorn, two workers, history and broadcasts in Redis."""
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        unavailable("gunicorn is not installed (pip install -e '.[test]')")
    env = {
        "TURBO_JS_PATH": str(turbo_js),
        "TURBO_SECRET": SECRET,  # the same in both workers: a page may connect to either
        "REDIS_URL": redis_server.url,
        "CHAT_DEBUG": "1",
    }
    server = GunicornChat(env, workers=2)
    try:
        yield server
    finally:
        server.stop()


# -- people and their tabs ------------------------------------------------------


class Tab:
    """One page of the chat in a person's browser context."""

    def __init__(self, context, url: str):
        self.page = context.new_page()
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

    def notes(self, text: str):
        return self.page.locator("#messages .message.private", has_text=text)

    def has_message(self, text: str) -> bool:
        return self.messages(text).count() > 0

    def same_document(self) -> bool:
        return self.page.evaluate("window.sameDocument === true")

    def send(self, text: str, *, name: str | None = None, private: bool = False) -> None:
        """Fill in the form and press Send, as a person would."""
        if name is not None:
            self.page.fill("input[name=name]", name)
        self.page.fill("input[name=text]", text)
        checkbox = self.page.locator("input[name=private]")
        if private:
            checkbox.check()
        elif checkbox.count():
            checkbox.uncheck()
        self.page.click("button[type=submit]")


class Person:
    """One person: a fresh browser context (own cookies) with tabs on the chat."""

    def __init__(self, browser, url: str, name: str | None = None):
        self.url = url
        self.name = name
        self.context = browser.new_context()
        self.context.set_default_timeout(TIMEOUT_MS)
        if name is not None:  # as if they had posted under this name before
            self.context.add_cookies([{"name": "user", "value": name, "url": url}])
        self.tabs: list[Tab] = []

    def open(self) -> Tab:
        self.tabs.append(Tab(self.context, self.url))
        return self.tabs[-1]

    @property
    def errors(self) -> list[str]:
        return [error for tab in self.tabs for error in tab.errors]

    def close(self):
        self.context.close()


def wait_until_listening(server, tabs: list[Tab], timeout: float = 30.0) -> None:
    """Post probe messages until one has reached every tab through its stream.

    A page has no "connected" signal; the tabs were loaded before the first
    probe was posted, so a probe that shows in one came over its WebSocket.
    """
    marker = f"probe-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        status, _ = server.post("/messages", name="probe", text=f"{marker}-{attempt}")
        assert status == 200, f"posting a probe answered {status}"
        settle = time.monotonic() + 1.0
        while time.monotonic() < settle:
            if all(tab.has_message(marker) for tab in tabs):
                return
            time.sleep(0.05)
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no probe reached every tab within {timeout}s "
                f"({[tab.has_message(marker) for tab in tabs]})\n{server.stderr()}"
            )


# -- one process ----------------------------------------------------------------


def test_a_message_posted_in_one_page_shows_in_every_page(browser, chat):
    from playwright.sync_api import expect

    alice = Person(browser, chat.url + "/")
    bob = Person(browser, chat.url + "/")
    try:
        alice_tab, bob_tab = alice.open(), bob.open()
        for tab in (alice_tab, bob_tab):
            src = tab.page.locator("turbo-stream-source").get_attribute("src")
            assert re.fullmatch(rf"ws://127\.0\.0\.1:{chat.port}/turbo-stream\?stream=[\w.\-]+", src), src

        wait_until_listening(chat, [alice_tab, bob_tab])

        text = unique("Hello <b>Bob</b> & all")
        alice_tab.send(text, name="Alice")

        for tab in (bob_tab, alice_tab):
            expect(tab.messages(text)).to_have_count(1, timeout=TIMEOUT_MS)
            message = tab.messages(text)
            # Escaped: the markup typed shows as text and makes no element.
            expect(message).to_contain_text(text)
            expect(message.locator("b")).to_have_count(0)
            expect(message.locator(".name")).to_have_text("Alice")

        # Bob's page was changed in place by the stream, not reloaded.
        assert bob_tab.same_document()
        # Alice's first message took her name: it went through Turbo Drive
        # (303, then a visit with no reload), which emptied the text and kept
        # her name from the cookie.
        assert alice_tab.same_document()
        expect(alice_tab.page.locator("input[name=text]")).to_have_value("")
        expect(alice_tab.page.locator("input[name=name]")).to_have_value("Alice")

        assert alice.errors == [] and bob.errors == [], alice.errors + bob.errors
    finally:
        alice.close()
        bob.close()


def test_a_private_note_shows_in_every_tab_of_its_sender_and_nowhere_else(browser, chat):
    from playwright.sync_api import expect

    url = chat.url + "/"
    alice = Person(browser, url)  # no name yet
    bob = Person(browser, url, name="Bob")
    try:
        alice1, bob_tab = alice.open(), bob.open()
        # A page with no name listens as nobody: it offers no private note.
        expect(alice1.page.locator("input[name=private]")).to_have_count(0)
        # The first message takes the name; Turbo's visit renders the page
        # again, and its stream now listens as Alice.
        alice1.send(unique("Hello, I am Alice"), name="Alice")
        expect(alice1.page.locator("input[name=private]")).to_have_count(1)
        alice2 = alice.open()
        wait_until_listening(chat, [alice1, alice2, bob_tab])

        marker = uuid.uuid4().hex
        note = f"Buy <i>milk</i> {marker}"
        alice1.send(note, private=True)
        for tab in (alice1, alice2):  # alice2 only has it from its own stream
            expect(tab.notes(note)).to_have_count(1)
            expect(tab.notes(note).locator(".tag")).to_contain_text("private note")
            expect(tab.notes(note).locator("i")).to_have_count(0)
        # Answered with a stream that only replaced the form: text cleared,
        # the box still ticked for the next note.
        expect(alice1.page.locator("input[name=text]")).to_have_value("")
        expect(alice1.page.locator("input[name=private]")).to_be_checked()

        # Then a public message. Bob's one connection gets what is meant for
        # it in the order it was broadcast, so once the public message is
        # there, a private note sent to him before it would be there too.
        public = unique("Back in public")
        alice1.send(public)
        for tab in (bob_tab, alice1, alice2):
            expect(tab.messages(public)).to_have_count(1)
        assert bob_tab.page.locator("#messages .private").count() == 0
        assert marker not in bob_tab.page.content()

        # Kept nowhere: a page rendered now has the public message, not the note.
        alice3 = alice.open()
        expect(alice3.messages(public)).to_have_count(1)
        assert marker not in alice3.page.content()
        # A post under a known name is answered by a stream, with no visit, so
        # the tab that sent the note still shows it.
        expect(alice1.notes(note)).to_have_count(1)

        assert all(tab.same_document() for tab in (alice1, alice2, bob_tab))
        assert alice.errors == [] and bob.errors == [], alice.errors + bob.errors
    finally:
        alice.close()
        bob.close()


# -- gunicorn, two workers, Redis -----------------------------------------------


def separate_workers(server: GunicornChat, first: str, second: str, timeout: float = 15.0) -> dict | None:
    """Whether the sockets of two users are served by different workers.

    Each sample of ``/_debug/connections`` comes from whichever worker
    accepted it. One that holds exactly one of the two users proves the other
    is elsewhere: it is returned. One that holds both proves they share a
    worker: ``None``. Samples holding neither say nothing; ``None`` after
    ``timeout`` of those.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sample = server.debug()
        has_first, has_second = first in sample["users"], second in sample["users"]
        if has_first != has_second:
            return sample
        if has_first and has_second:
            return None
        time.sleep(0.02)
    return None


def test_pages_on_two_gunicorn_workers_see_each_others_messages(browser, gunicorn_chat):
    from playwright.sync_api import expect

    server = gunicorn_chat
    url = server.url + "/"
    people = [Person(browser, url, name="Alice")]
    try:
        alice = people[0]
        alice_tab = alice.open()
        # gunicorn's workers share one listening socket: whichever accepts a
        # WebSocket serves it. Bring in a new Bob until his lands on the
        # worker that does not serve Alice.
        for attempt in range(1, 21):
            bob = Person(browser, url, name=f"Bob-{attempt}")
            people.append(bob)
            bob_tab = bob.open()
            wait_until_listening(server, [alice_tab, bob_tab])
            if separate_workers(server, "Alice", bob.name):
                break
            bob.close()
            people.remove(bob)
        else:
            raise AssertionError(f"20 Bobs all shared Alice's worker\n{server.stderr()}")

        # Each posts through the form (under a known name: no visit, the
        # sockets stay where they are); each message reaches the other worker.
        from_alice, from_bob = unique("Alice, on one worker"), unique("Bob, on the other")
        alice_tab.send(from_alice)
        bob_tab.send(from_bob)
        for text in (from_alice, from_bob):
            for tab in (alice_tab, bob_tab):
                expect(tab.messages(text)).to_have_count(1)
        assert separate_workers(server, "Alice", bob.name), "a page moved to the other worker"
        assert alice_tab.same_document() and bob_tab.same_document()

        # One history in Redis: both workers list both messages.
        ids = {int(alice_tab.messages(text).get_attribute("id").removeprefix("message_"))
               for text in (from_alice, from_bob)}
        seen: dict[int, list] = {}  # pid: the history ids it listed
        deadline = time.monotonic() + 20
        while sum(ids <= set(history) for history in seen.values()) < 2:
            assert time.monotonic() < deadline, f"both workers should list {ids}: {seen}"
            sample = server.debug()
            seen[sample["pid"]] = sample["history"]
        assert set(seen) == server.pids

        assert alice.errors == [] and bob.errors == [], alice.errors + bob.errors
    finally:
        for person in people:
            person.close()
