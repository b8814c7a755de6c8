"""The widget in a real browser: Debian's Chromium driven by Playwright, against
``otpgate serve`` and an embedding page served from another origin.

Chromium is the system's (``make browser`` installs it; Playwright downloads
nothing). When it cannot be started these tests fail, saying so; they never skip.
A screenshot of each state is kept in ``test-artifacts/widget/`` (ignored by git).
No page may log an error to the console (a missing favicon, a refused script...);
only the API's own refusals that a test provokes are expected there.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jwt
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Frame,
    FrameLocator,
    Page,
    Request,
    Route,
    expect,
)

from tests.browser import chromium_for
from tests.service_process import ServiceProcess

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "widget"
# Long enough that a resend, a wrong code and the right one fit inside it on a busy machine.
COOLDOWN_SECONDS = 8
ALLOWED_COUNTRIES = "US,CA,GB"
# Test numbers (TEST_PHONE_NUMBERS): fixed codes, no SMS. One per test, so that one
# test's cooldown never meets another's.
NUMBERS = {
    "flow": ("+12125550101", "111111"),
    "redirect": ("+12125550102", "222222"),
    "cooldown": ("+12125550103", "333333"),
    "wrong": ("+12125550104", "444444"),
    "verification_id": ("+12125550105", "555555"),
    "fit-420x420": ("+12125550106", "666666"),
    "fit-360x640": ("+447400123457", "777777"),
}
# What the user types in each fitting test, in the country the browser's language gives.
NATIONAL = {
    "fit-420x420": ("en-US", "US +1", "2125550106", "212 555 0106"),
    "fit-360x640": ("en-GB", "GB +44", "07400123457", "0 740 012 3457"),
}
# How Chromium logs an answer the API refused (the widget shows it in words).
API_REFUSAL = re.compile(
    r"^Failed to load resource: .*\(http://[^)]*/api/v1/(request|verify)-otp\)$"
)
JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")

expect.set_options(timeout=15_000)  # a busy 2-core machine; waits end as soon as they hold


# --- the embedding site: another origin, with an iframe and a postMessage listener -----------

# What an app embedding the widget writes (the README's example): the iframe, and a
# listener that takes the message only from the widget's origin. (An empty icon: this
# site has no /favicon.ico, and the console must stay clean.)
EMBED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shop: sign in</title>
<link rel="icon" href="data:,">
<style>code { word-break: break-all; }</style></head>
<body>
<h1>Shop</h1>
<p>Token: <code id="token"></code></p>
<p>Phone: <span id="phone"></span></p>
<script>
  const widget = new URL(new URLSearchParams(location.search).get("widget"));
  const frame = document.createElement("iframe");
  frame.id = "otpgate";
  frame.title = "Verify your phone number";
  frame.allow = "otp-credentials";
  frame.width = 420;  // docs/widget.md's snippet
  frame.height = 420;
  frame.src = widget.origin + "/widget?origin=" + encodeURIComponent(location.origin);
  window.received = [];
  window.addEventListener("message", (event) => {
    if (event.origin !== widget.origin) return;
    if (!event.data || event.data.type !== "otpgate:verified") return;
    window.received.push({ origin: event.origin, data: event.data });
    document.getElementById("token").textContent = event.data.token;
    document.getElementById("phone").textContent = event.data.phoneNumber;
  });
  document.body.append(frame);
</script>
</body></html>
"""

CALLBACK_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shop: verified</title>
<link rel="icon" href="data:,"></head>
<body><h1>Back at the shop</h1><p>Fragment: <code id="fragment"></code></p>
<script>document.getElementById("fragment").textContent = location.hash;</script>
</body></html>
"""


PAGES = {"/embed": EMBED_PAGE, "/callback": CALLBACK_PAGE}


class _EmbedderHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        page = PAGES.get(urlsplit(self.path).path)
        body = (page or "not found").encode()
        self.send_response(200 if page else 404)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def embedder() -> Iterator[str]:
    """The embedding site's origin, http://127.0.0.1:<port>."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmbedderHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def widget_server(
    tmp_path_factory: pytest.TempPathFactory, embedder: str
) -> Iterator[ServiceProcess]:
    """``otpgate serve`` with the embedding site as its one allowed widget origin."""
    server = ServiceProcess(
        tmp_path_factory.mktemp("widget-server"),
        WIDGET_ALLOWED_ORIGINS=embedder,
        TEST_PHONE_NUMBERS=",".join(f"{phone}={code}" for phone, code in NUMBERS.values()),
        ALLOWED_COUNTRIES=ALLOWED_COUNTRIES,
        OTP_RESEND_COOLDOWN_SECONDS=str(COOLDOWN_SECONDS),
        RATE_LIMIT_MAX_REQUESTS="1000",
    )
    try:
        server.wait_ready()
        yield server
    finally:
        out = server.stop()
        assert "Traceback" not in out, out


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with chromium_for("the widget's browser tests") as browser:
        yield browser


class Console:
    """Every error a page logs or throws; ``allow`` names the ones a test provokes."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def watch(self, page: Page) -> None:
        page.on("console", self._logged)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _logged(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} ({message.location.get('url', '')})")

    def allow(self, pattern: re.Pattern[str]) -> None:
        self.allowed.append(pattern)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@pytest.fixture
def console() -> Console:
    return Console()


@contextmanager
def browsing(
    chromium: Browser,
    console: Console,
    test: str,
    width: int = 640,
    height: int = 560,
    **options: Any,
) -> Iterator[Page]:
    """A page in a fresh context of that viewport, its console watched; no unexpected
    error may be logged by the end."""
    context = chromium.new_context(viewport={"width": width, "height": height}, **options)
    context.set_default_timeout(15_000)
    page = context.new_page()
    console.watch(page)
    try:
        yield page
    finally:
        shot(page, test, "end")  # the state it ended in, passed or not
        context.close()
    assert console.unexpected() == [], "errors in the browser's console"


@pytest.fixture
def page(chromium: Browser, request: pytest.FixtureRequest, console: Console) -> Iterator[Page]:
    with browsing(chromium, console, request.node.name) as page:
        yield page


def shot(page: Page, test: str, state: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.]+", "-", f"{test.removeprefix('test_')}-{state}")
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def send_code(widget: Page | FrameLocator, phone: str) -> None:
    widget.get_by_label("Phone number").fill(phone)
    widget.get_by_role("button", name="Send code").click()
    expect(widget.get_by_label("Verification code")).to_be_visible()
    expect(widget.get_by_text(f"We sent a code to {phone}.")).to_be_visible()


def is_api(path: str) -> Any:
    return lambda r: urlsplit(r.url).path == path and r.request.method == "POST"


def check_signature(server: ServiceProcess, token: str, phone: str) -> None:
    """What the embedding app's backend does with the token: its ES256 signature checked
    against the service's /.well-known/jwks.json with PyJWT, then its claims."""
    jwks = jwt.PyJWKClient(f"{server.base}/.well-known/jwks.json", cache_keys=False)
    claims = jwt.decode(
        token,
        jwks.get_signing_key_from_jwt(token).key,
        algorithms=["ES256"],
        audience="otpgate",
        issuer="otpgate",
        options={"require": ["iss", "aud", "sub", "iat", "exp", "jti"]},
    )
    assert claims["sub"] == phone


def assert_jwt(token: object) -> str:
    assert isinstance(token, str) and JWT_SHAPE.match(token), token
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "ES256"
    return token


# --- (1) the whole flow, framed, ending in a postMessage --------------------------------------


def test_an_embedding_page_receives_the_token(
    page: Page, widget_server: ServiceProcess, embedder: str
) -> None:
    phone, code = NUMBERS["flow"]
    page.goto(f"{embedder}/embed?widget={quote(widget_server.base)}")
    widget = page.frame_locator("iframe#otpgate")
    expect(widget.get_by_label("Phone number")).to_be_visible()
    shot(page, "flow", "1-phone")

    send_code(widget, phone)
    code_input = widget.get_by_label("Verification code")
    expect(code_input).to_have_attribute("autocomplete", "one-time-code")
    expect(code_input).to_have_attribute("inputmode", "numeric")
    shot(page, "flow", "2-code")

    code_input.fill(code)
    with page.expect_response(is_api("/api/v1/verify-otp")) as verified:
        widget.get_by_role("button", name="Verify").click()
    answer = verified.value
    assert answer.status == 200
    # By the verification request-otp opened, not by the phone.
    sent = answer.request.post_data_json
    assert sent == {"verificationId": sent["verificationId"], "otp": code}
    assert re.fullmatch(r"VE[0-9a-f]{32}", sent["verificationId"])

    expect(page.locator("#token")).not_to_be_empty()
    expect(widget.get_by_text("Your phone number is verified.")).to_be_visible()
    shot(page, "flow", "3-verified")
    received = page.evaluate("window.received")
    assert len(received) == 1
    message = received[0]
    assert message["origin"] == widget_server.base
    assert message["data"]["type"] == "otpgate:verified"
    assert message["data"]["phoneNumber"] == phone
    token = assert_jwt(message["data"]["token"])
    assert token == answer.json()["token"]  # the very token the service answered

    # The embedding app's backend checks it against the service's published keys.
    check_signature(widget_server, token, phone)


# --- (1b) the full-page flow: back to an allowed return_url, token in the fragment ------------


def test_a_return_url_gets_the_token_in_its_fragment(
    page: Page, widget_server: ServiceProcess, embedder: str
) -> None:
    phone, code = NUMBERS["redirect"]
    back = f"{embedder}/callback?order=42"
    answered: list[str] = []

    def verify_otp(route: Route) -> None:
        # The page leaves right after this answer: its body is read here, on the way.
        real = route.fetch()
        answered.append(real.json()["token"])
        route.fulfill(response=real)

    page.route(re.compile(r"/api/v1/verify-otp$"), verify_otp)
    page.goto(f"{widget_server.base}/widget?return_url={quote(back, safe='')}")
    send_code(page, phone)
    page.get_by_label("Verification code").fill(code)
    page.get_by_role("button", name="Verify").click()

    expect(page).to_have_url(re.compile(re.escape(back) + "#token="))
    expect(page.locator("#fragment")).not_to_be_empty()
    shot(page, "redirect", "back-at-the-app")
    fragment = urlsplit(page.url).fragment
    token = assert_jwt(fragment.removeprefix("token="))
    assert answered == [token]
    check_signature(widget_server, token, phone)


# --- (2) the resend cooldown: a live countdown, then the button again -------------------------


def test_a_second_send_counts_down_the_cooldown(
    page: Page, widget_server: ServiceProcess, console: Console
) -> None:
    console.allow(API_REFUSAL)
    phone, _ = NUMBERS["cooldown"]
    page.goto(f"{widget_server.base}/widget")
    send_code(page, phone)

    resend = page.get_by_role("button", name="Send a new code")
    with page.expect_response(is_api("/api/v1/request-otp")) as refused:
        resend.click()
    assert refused.value.status == 429
    assert refused.value.json()["code"] == "resend_cooldown"
    wait = int(refused.value.headers["retry-after"])
    assert 1 <= wait <= COOLDOWN_SECONDS

    countdown = page.get_by_role("timer")
    expect(page.get_by_role("alert")).to_have_text(
        "A code was sent to this number a moment ago. Please wait before asking for another one."
    )
    expect(countdown).to_have_text(re.compile(rf"^You can try again in 0:0[1-{wait}]\.$"))
    expect(resend).to_be_disabled()
    shot(page, "cooldown", "1-counting-down")
    if wait > 1:  # it counts: the number it shows goes down while it waits
        expect(countdown).to_have_text(re.compile(rf"^You can try again in 0:0[1-{wait - 1}]\."))

    expect(resend).to_be_enabled(timeout=(COOLDOWN_SECONDS + 10) * 1000)
    expect(countdown).to_be_hidden()
    expect(page.get_by_role("status")).to_have_text("You can try again now.")
    shot(page, "cooldown", "2-ready-again")

    with page.expect_response(is_api("/api/v1/request-otp")) as sent:
        resend.click()
    assert sent.value.status == 200
    expect(page.get_by_text(f"We sent a code to {phone}.")).to_be_visible()


# --- (3) a wrong code, and a number the service refuses: words, never JSON --------------------


def test_a_wrong_code_is_explained(
    page: Page, widget_server: ServiceProcess, console: Console
) -> None:
    console.allow(API_REFUSAL)
    phone, code = NUMBERS["wrong"]
    page.goto(f"{widget_server.base}/widget")
    send_code(page, phone)
    wrong = "000000" if code != "000000" else "999999"
    page.get_by_label("Verification code").fill(wrong)
    with page.expect_response(is_api("/api/v1/verify-otp")) as answer:
        page.get_by_role("button", name="Verify").click()
    assert answer.value.json()["code"] == "invalid_code"

    alert = page.get_by_role("alert")
    expect(alert).to_have_text(
        "That code is wrong or has expired. Check it, or ask for a new code."
    )
    shot(page, "wrong-code", "explained")
    assert "{" not in page.locator("body").inner_text()
    expect(page.get_by_label("Verification code")).to_be_visible()  # it can be typed again


def test_a_number_the_service_refuses_is_explained(
    page: Page, widget_server: ServiceProcess, console: Console
) -> None:
    console.allow(API_REFUSAL)
    page.goto(f"{widget_server.base}/widget")
    page.get_by_label("Phone number").fill("+1 212 555")  # E.164 in shape, not a real number
    with page.expect_response(is_api("/api/v1/request-otp")) as answer:
        page.get_by_role("button", name="Send code").click()
    assert answer.value.json()["code"] == "invalid_phone_number"
    expect(page.get_by_role("alert")).to_contain_text("That is not a valid phone number.")
    shot(page, "invalid-phone", "explained")
    assert "invalid_phone_number" not in page.locator("body").inner_text()


# --- (4) a destination not in WIDGET_ALLOWED_ORIGINS is refused -------------------------------


@pytest.mark.parametrize(
    ("query", "refusal"),
    [
        ("origin=https://evil.example", "The site https://evil.example is not allowed"),
        (
            "return_url=" + quote("https://evil.example/steal", safe=""),
            "The address https://evil.example/steal is not allowed",
        ),
    ],
    ids=["origin", "return_url"],
)
def test_an_unlisted_destination_is_refused(
    page: Page, widget_server: ServiceProcess, query: str, refusal: str
) -> None:
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if "/api/" in r.url else None)
    page.goto(f"{widget_server.base}/widget?{query}")
    expect(page.get_by_role("alert")).to_contain_text(refusal)
    expect(page.get_by_label("Phone number")).to_be_hidden()
    expect(page.get_by_role("button", name="Send code")).to_be_hidden()
    shot(page, f"refused-{query.partition('=')[0]}", "refused")
    assert sent == []  # no code sent, so no token can ever exist here


def test_an_unlisted_site_cannot_frame_it(
    page: Page, widget_server: ServiceProcess, embedder: str, console: Console
) -> None:
    console.allow(re.compile("frame-ancestors"))  # the refusal this test is about
    # The same embedding page from an origin that is not listed: localhost, not 127.0.0.1.
    unlisted = embedder.replace("127.0.0.1", "localhost")
    with page.expect_console_message(lambda m: "frame-ancestors" in m.text) as blocked:
        page.goto(f"{unlisted}/embed?widget={quote(widget_server.base)}")
    assert embedder in blocked.value.text  # the directive names the one allowed origin
    frame = page.frame_locator("iframe#otpgate")
    expect(frame.get_by_label("Phone number")).to_have_count(0)
    shot(page, "unlisted-frame", "blocked")
    assert page.evaluate("window.received") == []


# --- a purpose travels from the page's address to the token ---------------------------------


def test_a_purpose_from_the_address_is_requested_verified_and_signed(
    page: Page, widget_server: ServiceProcess
) -> None:
    phone, code = NUMBERS["verification_id"]
    page.goto(f"{widget_server.base}/widget?purpose=login")
    with page.expect_response(is_api("/api/v1/request-otp")) as requested:
        send_code(page, phone)
    opened = requested.value
    assert opened.request.post_data_json == {"phoneNumber": phone, "purpose": "login"}
    verification_id = opened.json()["verificationId"]
    page.get_by_label("Verification code").fill(code)
    with page.expect_response(is_api("/api/v1/verify-otp")) as verified:
        page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("status")).to_have_text("Your phone number is verified.")
    answer = verified.value
    assert answer.request.post_data_json == {
        "verificationId": verification_id,
        "otp": code,
        "purpose": "login",
    }
    claims = jwt.decode(answer.json()["token"], options={"verify_signature": False})
    assert (claims["purpose"], claims["jti"]) == ("login", verification_id)
    check_signature(widget_server, answer.json()["token"], phone)


# --- every state fits the frame, unscrolled; a national number; the countdown stops ---------

# Each element the user can see, inside the viewport: nothing is reached only by scrolling.
OUTSIDE_THE_VIEWPORT = """() => {
  const root = document.documentElement;
  const outside = [];
  for (const element of document.body.querySelectorAll("*")) {
    const box = element.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    if (getComputedStyle(element).visibility === "hidden") continue;
    const right = root.clientWidth, bottom = root.clientHeight;
    if (box.left < 0 || box.top < 0 || box.right > right || box.bottom > bottom) {
      outside.push(element.tagName.toLowerCase() + "#" + element.id + " " +
        JSON.stringify([box.left, box.top, box.right, box.bottom]));
    }
  }
  if (root.scrollHeight > root.clientHeight || root.scrollWidth > root.clientWidth) {
    outside.push("the page scrolls: " + root.scrollWidth + "x" + root.scrollHeight);
  }
  return outside;
}"""


def fits(page: Page | Frame, test: str, state: str) -> None:
    assert page.evaluate(OUTSIDE_THE_VIEWPORT) == [], f"{state}: outside the viewport"
    if isinstance(page, Page):
        shot(page, test, state)


@pytest.mark.parametrize("size", ["420x420", "360x640"])
def test_every_state_fits_and_the_countdown_stops_once_verified(
    chromium: Browser, widget_server: ServiceProcess, console: Console, size: str
) -> None:
    """The documented frame (420x420) and a phone (360x640), each in a browser whose
    language names an allowed country: the number typed as at home reaches the service
    in E.164, and every state, the longest messages with a countdown among them, shows
    whole."""
    console.allow(API_REFUSAL)
    test = f"fit-{size}"
    phone, code = NUMBERS[test]
    language, shown, typed, formatted = NATIONAL[test]
    width, height = (int(side) for side in size.split("x"))
    with browsing(chromium, console, test, width, height, locale=language) as page:
        page.goto(f"{widget_server.base}/widget")
        country = page.get_by_label("Country")
        expect(country).to_have_value(language.partition("-")[2])  # the browser's region
        offered = country.locator("option").evaluate_all("options => options.map(o => o.value)")
        assert sorted(offered) == sorted(ALLOWED_COUNTRIES.split(","))
        expect(page.locator("#country-shown")).to_have_text(shown)
        number = page.get_by_label("Phone number")
        number.press_sequentially(typed)
        expect(number).to_have_value(formatted)
        fits(page, test, "1-request")

        with page.expect_response(is_api("/api/v1/request-otp")) as requested:
            page.get_by_role("button", name="Send code").click()
        assert requested.value.status == 200
        assert requested.value.request.post_data_json == {"phoneNumber": phone}
        expect(page.get_by_text(f"We sent a code to {phone}. It expires in 5:00.")).to_be_visible()
        fits(page, test, "2-code-sent")

        resend = page.get_by_role("button", name="Send a new code")
        with page.expect_response(is_api("/api/v1/request-otp")) as refused:
            resend.click()
        assert refused.value.status == 429
        cooldown_ends = time.monotonic() + int(refused.value.headers["retry-after"])
        countdown = page.get_by_role("timer")
        expect(countdown).to_have_text(re.compile(r"^You can try again in 0:0[1-8]\.$"))
        fits(page, test, "3-cooldown-resend")

        page.get_by_label("Verification code").fill("000000")
        with page.expect_response(is_api("/api/v1/verify-otp")) as wrong:
            page.get_by_role("button", name="Verify").click()
        assert wrong.value.json()["code"] == "invalid_code"
        expect(page.get_by_role("alert")).to_contain_text("That code is wrong")
        expect(countdown).to_be_visible()  # still counting the resend's cooldown
        fits(page, test, "4-wrong-code")

        page.get_by_label("Verification code").fill(code)
        with page.expect_response(is_api("/api/v1/verify-otp")) as verified:
            page.get_by_role("button", name="Verify").click()
        status = page.get_by_role("status")
        expect(status).to_have_text("Your phone number is verified.")
        expect(countdown).to_be_hidden()
        fits(page, test, "5-verified")
        # What the service verified: the E.164 number, the token's subject.
        claims = jwt.decode(verified.value.json()["token"], options={"verify_signature": False})
        assert claims["sub"] == phone

        # Past the end of the cooldown: no countdown came back, no "try again".
        page.wait_for_timeout(max(0.0, cooldown_ends - time.monotonic()) * 1000 + 1200)
        expect(countdown).to_be_hidden()
        expect(status).to_have_text("Your phone number is verified.")
        expect(page.locator("#error")).to_be_empty()


def test_the_documented_frame_shows_the_whole_widget(
    page: Page, widget_server: ServiceProcess, embedder: str
) -> None:
    page.goto(f"{embedder}/embed?widget={quote(widget_server.base)}")
    frame = page.frame_locator("iframe#otpgate")
    expect(frame.get_by_role("button", name="Send code")).to_be_visible()
    widget = page.frame(url=re.compile(r"/widget\?"))
    assert widget is not None
    assert widget.evaluate("[innerWidth, innerHeight]") == [420, 420]
    fits(widget, "framed", "request")


@pytest.mark.parametrize("path", ["/widget", "/docs"])
def test_pages_have_an_icon_and_log_no_error(
    page: Page, widget_server: ServiceProcess, path: str
) -> None:
    """The console check itself is the page fixture's: a missing /favicon.ico would fail it."""
    page.goto(f"{widget_server.base}{path}", wait_until="networkidle")
    icon = page.locator('link[rel="icon"]')
    expect(icon).to_have_attribute("type", "image/svg+xml")
    for url in (icon.evaluate("link => link.href"), f"{widget_server.base}/favicon.ico"):
        answer = page.request.get(url)
        assert answer.status == 200, url
        assert answer.headers["content-type"] == "image/svg+xml"
        assert answer.text().startswith("<svg")
