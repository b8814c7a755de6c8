"""The widget in a real browser: Debian's Chromium driven by Playwright, against
``otpgate serve`` and an embedding page served from another origin.

Chromium is the system's (``make browser`` installs it; Playwright downloads
nothing). When it cannot be started these tests fail, saying so; they never skip.
A screenshot of each state is kept in ``test-artifacts/widget/`` (ignored by git).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jwt
import pytest
from playwright.sync_api import (
    Browser,
    FrameLocator,
    Page,
    Request,
    Route,
    expect,
)

from tests.browser import chromium_for
from tests.service_process import ServiceProcess

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "widget"
COOLDOWN_SECONDS = 3
# Test numbers (TEST_PHONE_NUMBERS): fixed codes, no SMS. One per test, so that one
# test's cooldown never meets another's.
NUMBERS = {
    "flow": ("+12125550101", "111111"),
    "redirect": ("+12125550102", "222222"),
    "cooldown": ("+12125550103", "333333"),
    "wrong": ("+12125550104", "444444"),
    "verification_id": ("+12125550105", "555555"),
}
JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")

expect.set_options(timeout=15_000)  # a busy 2-core machine; waits end as soon as they hold


# --- the embedding site: another origin, with an iframe and a postMessage listener -----------

# What an app embedding the widget writes (the README's example): the iframe, and a
# listener that takes the message only from the widget's origin.
EMBED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shop: sign in</title>
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
  frame.width = 480;
  frame.height = 460;
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
<html lang="en"><head><meta charset="utf-8"><title>Shop: verified</title></head>
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


@pytest.fixture
def page(chromium: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 640, "height": 560})
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        yield page
    finally:
        shot(page, request.node.name, "end")  # the state it ended in, passed or not
        context.close()


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


def test_a_second_send_counts_down_the_cooldown(page: Page, widget_server: ServiceProcess) -> None:
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
    expect(countdown).to_have_text(re.compile(r"^You can try again in [1-3] seconds?\.$"))
    expect(resend).to_be_disabled()
    shot(page, "cooldown", "1-counting-down")
    if wait > 1:  # it counts: the number it shows goes down while it waits
        expect(countdown).to_have_text(re.compile(rf"^You can try again in [1-{wait - 1}] "))

    expect(resend).to_be_enabled(timeout=(COOLDOWN_SECONDS + 10) * 1000)
    expect(countdown).to_be_hidden()
    expect(page.get_by_role("status")).to_have_text("You can try again now.")
    shot(page, "cooldown", "2-ready-again")

    with page.expect_response(is_api("/api/v1/request-otp")) as sent:
        resend.click()
    assert sent.value.status == 200
    expect(page.get_by_text(f"We sent a code to {phone}.")).to_be_visible()


# --- (3) a wrong code, and a number the service refuses: words, never JSON --------------------


def test_a_wrong_code_is_explained(page: Page, widget_server: ServiceProcess) -> None:
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
        "That code is wrong or has expired. Check the text message and try again, "
        "or ask for a new code."
    )
    shot(page, "wrong-code", "explained")
    assert "{" not in page.locator("body").inner_text()
    expect(page.get_by_label("Verification code")).to_be_visible()  # it can be typed again


def test_a_number_the_service_refuses_is_explained(
    page: Page, widget_server: ServiceProcess
) -> None:
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
    page: Page, widget_server: ServiceProcess, embedder: str
) -> None:
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
