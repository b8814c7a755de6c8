"""The drop-in widget as served: a strict CSP, no inline script or style, its
configuration escaped into the page, a message for every machine code, and the
WIDGET_ALLOWED_ORIGINS setting. (tests/test_widget_browser.py runs it in Chromium.)"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import AsyncIterator
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from otpgate.cli.config_report import describe
from otpgate.config.settings import ConfigError, load_settings
from otpgate.http import widget
from otpgate.http.app import create_app
from otpgate.http.errors import HTTP_CODES, STATUS_BY_CODE
from otpgate.http.openapi import _ROUTE_CODES
from otpgate.wiring import build_components, start_up_warnings
from tests.conftest import FACTOR_KEYS, make_settings
from tests.fakes import CapturingSender

ROOT = Path(__file__).resolve().parents[1]
ORIGINS = "https://app.example.com,http://127.0.0.1:8080"


class Page(HTMLParser):
    """Every tag with its attributes, and the text inside each <script> and <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._open = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None and data.strip():
            self.inline.append(data)

    def attribute(self, element_id: str, name: str) -> str | None:
        return next(attrs.get(name) for _, attrs in self.tags if attrs.get("id") == element_id)


def parse(markup: str) -> Page:
    page = Page()
    page.feed(markup)
    page.close()
    return page


@pytest.fixture
async def client(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    overrides: dict[str, Any] = getattr(request, "param", {"widget_allowed_origins": ORIGINS})
    settings = make_settings(tmp_path, **overrides)
    components = build_components(settings, sender=CapturingSender())
    transport = httpx.ASGITransport(app=create_app(components))
    async with httpx.AsyncClient(transport=transport, base_url="http://otpgate.test") as c:
        yield c
    await components.close()


def directives(csp: str) -> dict[str, str]:
    pairs = (part.strip().partition(" ") for part in csp.split(";") if part.strip())
    return {name: value.strip() for name, _, value in pairs}


async def test_the_page_has_a_strict_csp_and_no_inline_script(client: httpx.AsyncClient) -> None:
    answer = await client.get("/widget")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    csp = directives(answer.headers["content-security-policy"])
    assert csp == {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "connect-src": "'self'",
        "img-src": "'self'",
        "form-action": "'none'",
        "base-uri": "'none'",
        "frame-ancestors": "https://app.example.com http://127.0.0.1:8080",
    }
    assert "x-frame-options" not in answer.headers  # it cannot list origins; CSP does

    page = parse(answer.text)
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts == [{"src": "widget/widget.js", "defer": None}]
    assert page.inline == []  # no <script> body, no <style> element
    assert "style" not in {tag for tag, _ in page.tags}
    for tag, attrs in page.tags:
        assert "style" not in attrs, tag
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        for name in ("src", "href", "action"):
            link = attrs.get(name)
            # Relative to the page, so only this origin (and a path prefix) serves them.
            assert link is None or not re.match(r"^([a-z]+:|//)", link), (tag, name, link)


async def test_the_page_carries_its_configuration_escaped(client: httpx.AsyncClient) -> None:
    page = parse((await client.get("/widget")).text)
    config = json.loads(page.attribute("otpgate-widget", "data-config") or "")
    assert config == {
        "allowedOrigins": ["https://app.example.com", "http://127.0.0.1:8080"],
        "otpLength": 6,
    }
    # Not reachable through the setting (an origin has no quote), but the escaping holds.
    markup = widget.page_html(['https://x"><script>alert(1)</script>'], 6)
    hostile = parse(markup)
    assert [attrs for tag, attrs in hostile.tags if tag == "script"] == [
        {"src": "widget/widget.js", "defer": None}
    ]
    escaped = hostile.attribute("otpgate-widget", "data-config") or ""
    assert json.loads(escaped)["allowedOrigins"] == ['https://x"><script>alert(1)</script>']


async def test_the_code_input_is_marked_for_autofill(client: httpx.AsyncClient) -> None:
    page = parse((await client.get("/widget")).text)
    assert page.attribute("code", "autocomplete") == "one-time-code"
    assert page.attribute("code", "inputmode") == "numeric"
    assert page.attribute("phone", "type") == "tel"
    labelled = {attrs.get("for") for tag, attrs in page.tags if tag == "label"}
    assert labelled == {"phone", "code"}
    assert page.attribute("error", "role") == "alert"
    assert page.attribute("status", "role") == "status"


@pytest.mark.parametrize("client", [{}], indirect=True)
async def test_without_allowed_origins_nobody_may_frame_it(client: httpx.AsyncClient) -> None:
    answer = await client.get("/widget")
    assert directives(answer.headers["content-security-policy"])["frame-ancestors"] == "'none'"
    assert answer.headers["x-frame-options"] == "DENY"
    config = json.loads(parse(answer.text).attribute("otpgate-widget", "data-config") or "")
    assert config["allowedOrigins"] == []


async def test_script_and_stylesheet_are_served_from_the_package(
    client: httpx.AsyncClient,
) -> None:
    for path, media_type in (
        ("/widget/widget.js", "text/javascript"),
        ("/widget/widget.css", "text/css"),
    ):
        answer = await client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"] == f"{media_type}; charset=utf-8"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "://" not in re.sub(r"https?://[^\s\"']*example[^\s\"']*", "", answer.text)


@pytest.mark.parametrize(
    "client", [{"api_auth": "required", "api_keys": "ci:" + "k" * 40}], indirect=True
)
async def test_the_page_needs_no_api_key(client: httpx.AsyncClient) -> None:
    for path in ("/widget", "/widget/widget.js", "/widget/widget.css"):
        assert (await client.get(path)).status_code == 200, path


def test_every_machine_code_has_a_human_message() -> None:
    script = (ROOT / "src/otpgate/http/widget/widget.js").read_text()
    block = script.split("var MESSAGES = {", 1)[1].split("};", 1)[0]
    messages = set(re.findall(r"^\s{4}(\w+):", block, re.MULTILINE))
    codes = set(STATUS_BY_CODE) | set(HTTP_CODES)
    for route_codes in _ROUTE_CODES.values():
        codes |= set(route_codes)
    assert codes - messages == set(), "codes the widget would show only the fallback for"
    assert messages - codes == set(), "messages for codes the API never sends"


def test_the_assets_are_package_data() -> None:
    """A wheel carries every file of the widget's folder (setuptools package-data globs)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["otpgate"]
    folder = ROOT / "src/otpgate/http/widget"
    for asset in folder.iterdir():
        if asset.suffix in ("", ".py", ".pyc") or asset.name == "__pycache__":
            continue
        relative = f"http/widget/{asset.name}"
        assert any(fnmatch(relative, glob) for glob in globs), relative


# --- WIDGET_ALLOWED_ORIGINS ------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    for name in ("WIDGET_ALLOWED_ORIGINS", "APP_ENV", "NODE_ENV"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_origins_are_kept_as_a_browser_writes_them(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(
        "WIDGET_ALLOWED_ORIGINS",
        " https://App.Example.com:443 , http://127.0.0.1:8080,,http://[::1]:80,"
        "https://app.example.com",
    )
    assert load_settings().widget_allowed_origins == [
        "https://app.example.com",
        "http://127.0.0.1:8080",
        "http://[::1]",
    ]
    clean_env.setenv("WIDGET_ALLOWED_ORIGINS", "")
    assert load_settings().widget_allowed_origins == []


@pytest.mark.parametrize(
    "value",
    [
        "*",
        "null",
        "app.example.com",
        "ftp://app.example.com",
        "https://app.example.com/",
        "https://app.example.com/callback",
        "https://app.example.com?x=1",
        "https://user@app.example.com",
        "https://app.example.com:99999",
        "https://bücher.example",
        "https://app example.com",
        "https://ok.example.com,https://",
    ],
)
def test_anything_but_an_origin_is_refused(clean_env: pytest.MonkeyPatch, value: str) -> None:
    clean_env.setenv("WIDGET_ALLOWED_ORIGINS", value)
    with pytest.raises(ConfigError, match=r"WIDGET_ALLOWED_ORIGINS: .*must be an origin"):
        load_settings()


def test_production_wants_https_origins(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in {
        "APP_ENV": "production",
        "FACTOR_ENCRYPTION_KEYS": FACTOR_KEYS,
        "OTP_HASH_SECRET": "s" * 40,
        "TOKEN_SIGNING_KEYS_FILE": "keys.pem",  # read at start-up, not by the settings
        "ALLOWED_COUNTRIES": "US",
        "API_AUTH": "off",
        "SMS_PROVIDER": "sns",
    }.items():
        clean_env.setenv(name, value)
    clean_env.setenv("WIDGET_ALLOWED_ORIGINS", "https://app.example.com,http://app.example.com")
    with pytest.raises(ConfigError, match="WIDGET_ALLOWED_ORIGINS: must be https://") as info:
        load_settings()
    assert "http://app.example.com" in str(info.value)
    clean_env.setenv("WIDGET_ALLOWED_ORIGINS", "https://app.example.com,http://localhost:8080")
    assert load_settings().widget_allowed_origins[1] == "http://localhost:8080"


def test_check_config_and_start_up_name_the_origins(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, widget_allowed_origins=ORIGINS)
    assert re.search(
        r"WIDGET_ALLOWED_ORIGINS\s+https://app.example.com, http://127.0.0.1:8080",
        describe(settings),
    )
    assert not [w for w in start_up_warnings(settings) if "WIDGET" in w]
    keyed = make_settings(
        tmp_path, widget_allowed_origins=ORIGINS, api_auth="required", api_keys="ci:" + "k" * 40
    )
    assert [w for w in start_up_warnings(keyed) if w.startswith("WIDGET_ALLOWED_ORIGINS")]
