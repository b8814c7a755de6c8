"""The operators' dashboard in a real browser: Debian's Chromium driven by Playwright.

A pumping burst blocks a prefix; the dashboard, pasted an admin key, shows the block and
each country's conversion, every bar labelled with its figures; the operator's lift asks
first (a cancel keeps the block), and once confirmed the next send to the range goes out.
No page logs an error to the console.

The server is the real app under uvicorn, on two listening sockets as ``otpgate serve``
gives it with ADMIN_PORT, run in this process on the in-memory store with a clock the
test holds (the other stores answer the same admin routes: tests/test_admin_api.py).

Chromium is the system's (``make browser``); when it cannot be started the test fails,
saying so. Screenshots go to ``test-artifacts/admin/`` (ignored by git).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect

from otpgate.http.app import create_app
from otpgate.store.reference import MemoryStore
from otpgate.wiring import build_components
from tests.browser import chromium_for
from tests.conftest import make_settings
from tests.fakes import CapturingSender
from tests.test_admin_api import ADMIN_KEY, BURST, PREFIX, Clock

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "admin"
PUMP_WINDOW = 60
# A country whose one code was never entered: its bars are 0%.
UNVERIFIED = "+447400123456"
FIGURES = re.compile(r"^(\d+%|no sends) · \d+ of \d+$")

expect.set_options(timeout=10_000)


@dataclass
class Running:
    api: str  # the API's base URL (PORT)
    admin: str  # the admin routes' (ADMIN_PORT)
    clock: Clock
    sender: CapturingSender  # the texts the service sent


def listening(host: str = "127.0.0.1") -> socket.socket:
    return socket.create_server((host, 0))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    api_sock, admin_sock = listening(), listening()
    admin_port = admin_sock.getsockname()[1]
    clock = Clock()
    settings = make_settings(
        tmp_path_factory.mktemp("admin-browser"),
        admin_api_keys=f"ops:{ADMIN_KEY}",
        admin_port=admin_port,
        rate_limit_max_requests=1000,
        ip_max_phones=1000,
        pump_prefix_min_sends=3,
        pump_window_seconds=PUMP_WINDOW,
        pump_block_seconds=3600,
        log_level="warning",
    )
    sender = CapturingSender()
    components = build_components(settings, store=MemoryStore(), sender=sender, clock=clock)
    config = uvicorn.Config(create_app(components), log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [api_sock, admin_sock]}, daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Running(
            f"http://127.0.0.1:{api_sock.getsockname()[1]}",
            f"http://127.0.0.1:{admin_port}",
            clock,
            sender,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with chromium_for("the dashboard's browser test") as browser:
        yield browser


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    try:
        yield page
    finally:
        shot(page, "end")
        context.close()


def shot(page: Page, state: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"dashboard-{state}.png", full_page=True)


def request_otp(service: Running, phone: str) -> httpx.Response:
    return httpx.post(f"{service.api}/api/v1/request-otp", json={"phoneNumber": phone}, timeout=5)


def test_an_operator_lifts_a_pumping_block_from_the_dashboard(page: Page, service: Running) -> None:
    logged = watch_console(page)
    deletes: list[Request] = []
    page.on("request", lambda r: deletes.append(r) if r.method == "DELETE" else None)
    # The burst: three sends pass, the fourth trips the surge guard and blocks the prefix.
    answers = [request_otp(service, phone) for phone in BURST[:5]]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert answers[3].json()["code"] == "prefix_blocked"
    code = service.sender.last_code(BURST[0])
    verified = httpx.post(
        f"{service.api}/api/v1/verify-otp", json={"phoneNumber": BURST[0], "otp": code}, timeout=5
    )
    assert verified.status_code == 200  # one of the three codes sent is entered
    assert request_otp(service, UNVERIFIED).status_code == 200

    page.goto(f"{service.admin}/admin")
    page.get_by_label("Admin key").fill(ADMIN_KEY)
    page.get_by_role("button", name="Use key").click()
    row = page.locator(f'#blocks tr[data-scope="{PREFIX}"]')
    expect(row).to_contain_text("prefix_blocked")
    expect(row).to_contain_text("surge")
    expect(row).to_contain_text("sends 4, previous 0")
    # A third of the country's codes verified: a third of the bar's 360 units.
    bar = page.locator('#chart g[data-scope="country:US"] rect.hour')
    expect(bar).to_have_attribute("width", "120")
    expect(page.locator("#chart")).to_contain_text("33% · 1 of 3")
    # A 0% bar is not an empty track: it says so, and out of how many.
    for period in ("hour", "day"):
        figures = page.locator(f'#chart g[data-scope="country:GB"] text[data-period="{period}"]')
        expect(figures).to_have_text("0% · 0 of 1")
    labels = page.locator("#chart text.figures").all_text_contents()
    assert len(labels) == 2 * page.locator("#chart g.country").count() == 4
    assert all(FIGURES.match(label) for label in labels), labels

    page.get_by_label("Phone number").fill(BURST[1])
    page.get_by_role("button", name="Look up").click()
    result = page.locator("#phone-result")
    expect(result).to_contain_text("pending, expires")
    expect(result).to_contain_text("1 of 5 per 600 s")
    shot(page, "1-blocked")

    # The key is this tab's: in sessionStorage, nowhere else.
    assert page.evaluate("sessionStorage.getItem('otpgate.adminKey')") == ADMIN_KEY
    assert page.evaluate("localStorage.length") == 0
    assert ADMIN_KEY not in page.url

    # A lift asks first; cancelled, nothing is sent and the block stays.
    block = f"prefix_blocked on {PREFIX}"
    lift = page.get_by_role("button", name=f"Lift {block}")
    lift.click()
    expect(row).to_contain_text("Lift?")
    cancel = page.get_by_role("button", name=f"Cancel, keep {block}")
    expect(cancel).to_be_focused()
    shot(page, "2-asks-before-lifting")
    cancel.click()
    expect(lift).to_be_focused()
    expect(row).not_to_contain_text("Lift?")
    page.get_by_role("button", name="Refresh").click()
    expect(row).to_contain_text("prefix_blocked")
    assert deletes == []
    listed = httpx.get(
        f"{service.admin}/admin/v1/blocks", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert PREFIX in [b["scope"] for b in listed.json()["blocks"]]

    # Asked again, and confirmed: it goes.
    lift.click()
    page.get_by_role("button", name=f"Yes, lift {block}").click()
    expect(page.get_by_role("status")).to_have_text(f"Lifted {block}.")
    assert [r.url.removeprefix(service.admin) for r in deletes] == [
        f"/admin/v1/blocks/prefix_blocked/{PREFIX.replace(':', '%3A')}"
    ]
    expect(page.get_by_text("No block is in force.")).to_be_visible()
    expect(row).to_have_count(0)
    shot(page, "3-lifted")

    # Lifted, the range is in grace until the block would have ended: the very next
    # send goes out, though the surge rule still counts this window's burst.
    after = request_otp(service, BURST[6])
    assert after.status_code == 200, after.text
    assert logged == [], logged


def test_a_refused_key_asks_for_another(page: Page, service: Running) -> None:
    logged = watch_console(page)
    page.goto(f"{service.admin}/admin")
    page.get_by_label("Admin key").fill("not-" + ADMIN_KEY)
    page.get_by_role("button", name="Use key").click()
    expect(page.get_by_role("alert")).to_have_text(re.compile("That key was refused"))
    expect(page.get_by_label("Admin key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    # The 401s themselves (the blocks and the figures, asked at once) are the only errors
    # the browser logs: no favicon missing, no script error.
    assert sorted(logged) == [
        f"{REFUSED_LOAD} 401 (Unauthorized) ({service.admin}/admin/v1/{path})"
        for path in ("blocks", "stats")
    ]


REFUSED_LOAD = "Failed to load resource: the server responded with a status of"


def watch_console(page: Page) -> list[str]:
    """Every error the page logs (a refused policy, a missing resource) or throws."""
    logged: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            logged.append(f"{message.text} ({message.location.get('url', '')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: logged.append(f"uncaught: {error}"))
    return logged
