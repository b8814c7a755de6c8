"""Start-up checks: each fast path runs only while its library still has what it uses."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import prometheus_client
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from uvicorn.protocols.http import httptools_impl

from otpgate.cli import uvicorn_config
from otpgate.delivery import fast_sns_publish
from otpgate.delivery.sns import SnsSender
from otpgate.http import fast_protocol, fast_routes, middleware
from otpgate.http.app import create_app
from otpgate.http.fast_routes import FastRoutes
from otpgate.http.middleware import ObservabilityMiddleware
from otpgate.observability import fast_log_line, fast_tally
from otpgate.runtime import fast_path
from otpgate.runtime.fast_path import PARTS, Part
from otpgate.wiring import Components, build_components, sns_config
from tests.conftest import make_settings
from tests.fakes import CapturingSender
from tests.http_stub import StubServer, publish_ok


@pytest.fixture(autouse=True)
def fresh_decisions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test decides anew, as a new process would."""
    monkeypatch.setattr(fast_path, "_reasons", {})
    monkeypatch.setattr(fast_path, "_warned", set())


@pytest.mark.parametrize("part", PARTS, ids=[part.name for part in PARTS])
def test_every_fast_path_fits_the_installed_libraries(part: Part) -> None:
    assert importlib.import_module(part.module).unavailable() is None
    assert fast_path.enabled(part, True)


def test_off_when_not_wanted_without_checking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_protocol, "unavailable", lambda: pytest.fail("checked"))
    assert not fast_path.enabled(fast_path.SERVER_PROTOCOL, False)


def test_a_failed_check_warns_once_and_stays_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[None] = []

    def gone() -> str:
        calls.append(None)
        return "STATUS_LINE is gone"

    monkeypatch.setattr(fast_protocol, "unavailable", gone)
    with caplog.at_level(logging.WARNING, logger="otpgate.fast_path"):
        for _ in range(3):
            assert not fast_path.enabled(fast_path.SERVER_PROTOCOL, True)
    assert len(calls) == 1
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "otpgate.http.fast_protocol" in record.getMessage()
    assert "STATUS_LINE is gone" in record.getMessage()
    assert "uvicorn's own HTTP protocol" in record.getMessage()


def test_a_module_that_no_longer_imports_is_a_reason(caplog: pytest.LogCaptureFixture) -> None:
    gone = Part("gone", "otpgate.no_such_module", "the stock path")
    with caplog.at_level(logging.WARNING, logger="otpgate.fast_path"):
        assert not fast_path.enabled(gone, True)
    assert "ModuleNotFoundError" in caplog.text
    assert "otpgate.no_such_module" in caplog.text


def test_a_check_that_raises_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise ValueError("no signature found")

    monkeypatch.setattr(fast_routes, "unavailable", broken)
    assert not fast_path.enabled(fast_path.ROUTES, True)


# -- the checks notice what they are there to notice ------------------------------------------


def test_server_protocol_check(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(httptools_impl, "STATUS_LINE", {})
        assert "STATUS_LINE" in (fast_protocol.unavailable() or "")

    def cycle_without_keep_alive(self: Any, scope: Any, transport: Any) -> None:
        self.scope = scope
        self.transport = transport

    with monkeypatch.context() as patch:
        patch.setattr(httptools_impl.RequestResponseCycle, "__init__", cycle_without_keep_alive)
        reason = fast_protocol.unavailable() or ""
        assert reason.startswith("RequestResponseCycle no longer sets")
        assert "keep_alive" in reason and "response_started" in reason


def test_routes_check(monkeypatch: pytest.MonkeyPatch) -> None:
    class Detached(fast_routes.Response):
        """Headers kept somewhere other than raw_headers."""

        @property
        def headers(self) -> Any:
            return {}

    monkeypatch.setattr(fast_routes, "Response", Detached)
    assert fast_routes.unavailable() == "headers set on a Response do not reach its raw_headers"


def test_access_line_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(logging.StreamHandler, "terminator")
    assert fast_log_line.unavailable() == "StreamHandler has no terminator"


def test_metric_tallies_check(monkeypatch: pytest.MonkeyPatch) -> None:
    def observe(self: Any, amount: float) -> None:
        self._value.inc(amount)

    monkeypatch.setattr(prometheus_client.Histogram, "observe", observe)
    reason = fast_tally.unavailable() or ""
    assert reason.startswith("Histogram.observe no longer uses")
    assert "_buckets" in reason and "_sum" in reason


def test_metric_tallies_check_adds_up_a_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    # Buckets that became cumulative would pass every name check; the round trip fails.
    real = prometheus_client.Histogram._child_samples

    def cumulative_twice(self: Any) -> Any:
        return [s._replace(value=s.value * 2) for s in real(self)]

    monkeypatch.setattr(prometheus_client.Histogram, "_child_samples", cumulative_twice)
    assert fast_tally.unavailable() == "a flushed tally does not add up to the values observed"


def test_sns_publish_check(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.delattr(aiohttp, "ConnectionTimeoutError")
        assert fast_sns_publish.unavailable() == "aiohttp.ConnectionTimeoutError is gone"
    with monkeypatch.context() as patch:
        patch.setattr(fast_sns_publish, "get_environ_proxies", lambda endpoint: {})
        reason = fast_sns_publish.unavailable()
        assert reason == "botocore's get_environ_proxies no longer takes (url)"


# -- FAST_PATH=false, and a failed check: the stock path, and nothing of the fast one ----------


@dataclass
class App:
    """An app built from settings, with an in-process client."""

    asgi: Any
    components: Components
    client: httpx.AsyncClient
    stopped: bool = False  # its lifespan ran to the end, which closes the components

    async def close(self) -> None:
        await self.client.aclose()
        if not self.stopped:
            await self.components.close()


@pytest.fixture
async def build(tmp_path: Path) -> AsyncIterator[Callable[..., App]]:
    built: list[App] = []

    def factory(**overrides: Any) -> App:
        path = tmp_path / f"app{len(built)}.sqlite3"
        settings = make_settings(tmp_path, sqlite_path=path, **overrides)
        components = build_components(settings, sender=CapturingSender())
        asgi = create_app(components)
        transport = httpx.ASGITransport(app=asgi)
        app = App(asgi, components, httpx.AsyncClient(transport=transport, base_url="http://t"))
        built.append(app)
        return app

    yield factory
    for app in built:
        await app.close()


async def start_and_stop(app: App) -> None:
    """Run the app's lifespan, startup then shutdown, as a server does."""
    events = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> Any:
        return next(events)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    await app.asgi(scope, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    app.stopped = True


def request_count(route: str, status: int) -> float:
    value = REGISTRY.get_sample_value(
        "otpgate_http_requests_total", {"route": route, "status": str(status)}
    )
    return value or 0.0


async def test_stock_mode_makes_no_fast_path_object(
    build: Callable[..., App], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otpgate.access")
    monkeypatch.setattr(fast_tally, "_tallies", {})
    monkeypatch.setattr(middleware, "log_fields", lambda *a: pytest.fail("direct line"))
    flushers: list[None] = []
    monkeypatch.setattr(fast_tally, "flush_periodically", lambda: flushers.append(None))
    for module in (fast_protocol, fast_routes, fast_log_line, fast_tally, fast_sns_publish):
        monkeypatch.setattr(module, "unavailable", lambda: pytest.fail("checked"))

    app = build(fast_path=False)
    assert isinstance(app.asgi, ObservabilityMiddleware)
    assert isinstance(app.asgi.app, Starlette)  # no FastRoutes in front of it
    before = request_count("/api/v1/verify-otp", 400)
    answer = await app.client.post(
        "/api/v1/verify-otp", json={"phoneNumber": "+12125550123", "otp": "000000"}
    )
    assert answer.json()["code"] == "invalid_code"
    assert [r.status for r in caplog.records if r.name == "otpgate.access"] == [400]
    # Counted at once, with nothing left to flush: no tally was made.
    assert request_count("/api/v1/verify-otp", 400) == before + 1
    assert fast_tally._tallies == {}
    await start_and_stop(app)
    assert flushers == []  # and no flusher ran


async def test_fast_mode_makes_them(
    build: Callable[..., App], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The counterpart of the test above, so that its checks are known to see something."""
    caplog.set_level(logging.INFO, logger="otpgate.access")
    monkeypatch.setattr(fast_tally, "_tallies", {})
    lines: list[Any] = []
    monkeypatch.setattr(middleware, "log_fields", lambda *a: lines.append(a))
    app = build(fast_path=True)
    assert isinstance(app.asgi.app, FastRoutes)
    before = request_count("/api/v1/verify-otp", 400)
    await app.client.post("/api/v1/verify-otp", json={"phoneNumber": "+12125550123", "otp": "1"})
    assert request_count("/api/v1/verify-otp", 400) == before  # until a flush
    assert fast_tally._tallies
    fast_tally.flush_all()
    assert request_count("/api/v1/verify-otp", 400) == before + 1
    assert len(lines) == 1


@pytest.mark.parametrize(
    ("module", "part"),
    [
        (fast_routes, fast_path.ROUTES),
        (fast_log_line, fast_path.ACCESS_LINE),
        (fast_tally, fast_path.METRIC_TALLIES),
    ],
    ids=["routes", "access-line", "metric-tallies"],
)
async def test_a_failed_check_runs_that_part_on_its_stock_path(
    build: Callable[..., App],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    module: Any,
    part: Part,
) -> None:
    caplog.set_level(logging.INFO, logger="otpgate.access")
    monkeypatch.setattr(module, "unavailable", lambda: "changed in this version")
    monkeypatch.setattr(fast_tally, "_tallies", {})
    lines: list[Any] = []
    monkeypatch.setattr(middleware, "log_fields", lambda *a: lines.append(a))
    with caplog.at_level(logging.WARNING, logger="otpgate.fast_path"):
        app = build(fast_path=True)
    # Once, though wiring and the app both ask about tallies.
    [warning] = [r for r in caplog.records if r.name == "otpgate.fast_path"]
    assert part.module in warning.getMessage()
    assert "changed in this version" in warning.getMessage()

    answer = await app.client.post(
        "/api/v1/verify-otp", json={"phoneNumber": "+12125550123", "otp": "000000"}
    )
    assert answer.status_code == 400
    assert answer.headers["x-request-id"]
    assert isinstance(app.asgi.app, FastRoutes) == (part is not fast_path.ROUTES)
    assert bool(lines) == (part is not fast_path.ACCESS_LINE)
    assert bool(fast_tally._tallies) == (part is not fast_path.METRIC_TALLIES)


# -- both modes, side by side ------------------------------------------------------------------

PHONE = "+12125550123"
JSON = {"content-type": "application/json"}
# Seconds left in a window or cooldown: the two runs may fall a second apart.
TIMED = ("retry-after", "x-ratelimit-reset")
API_KEY = "side-by-side-" + "k" * 32
WRONG_KEY = {"authorization": "Bearer " + "w" * 40}


def exchanges(sender: CapturingSender) -> list[tuple[str, str, dict[str, Any]]]:
    verify = "/api/v1/verify-otp"
    return [
        ("POST", "/api/v1/request-otp", {"json": {"phoneNumber": PHONE}}),
        ("POST", "/api/v1/request-otp", {"json": {"phoneNumber": PHONE}}),  # cooldown
        ("POST", verify, {"json": {"phoneNumber": PHONE, "otp": "12"}}),
        ("POST", verify, {"content": b"{", "headers": JSON}),
        ("POST", verify, {"content": b"x", "headers": {"content-type": "text/plain"}}),
        ("POST", verify, {"content": b"{" + b" " * 5000 + b"}", "headers": JSON}),
        ("POST", verify, {"json": {"phoneNumber": "+1555", "otp": "123456"}}),
        ("POST", verify, {"json": {"phoneNumber": "+12125550124", "otp": "123456"}}),
        ("POST", verify, {"json": lambda: {"phoneNumber": PHONE, "otp": sender.last_code(PHONE)}}),
        ("POST", verify, {"json": lambda: {"phoneNumber": PHONE, "otp": sender.last_code(PHONE)}}),
        ("POST", verify, {"json": {"phoneNumber": PHONE}, "headers": {"x-request-id": "r-1"}}),
        ("GET", verify, {}),
        ("GET", "/health", {}),
        ("HEAD", "/health", {}),
        ("GET", "/nope", {}),
        ("POST", "/api/v1/request-otp", {"json": {"phoneNumber": PHONE}, "headers": WRONG_KEY}),
        (
            "POST",
            verify,
            {
                "json": {"phoneNumber": "+12125550124", "otp": "123456"},
                "headers": {"authorization": f"Bearer {API_KEY}", "x-end-user-ip": "2001:db8::7"},
            },
        ),
    ]


def counts() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every otpgate counter and histogram count (durations differ from run to run)."""
    fast_tally.flush_all()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name.startswith("otpgate_") and sample.name.endswith(("_total", "_count"))
    }


async def run(app: App, sender: CapturingSender, caplog: pytest.LogCaptureFixture) -> Any:
    caplog.clear()
    before = counts()
    answers = []
    for method, path, given in exchanges(sender):
        options = {k: v() if callable(v) else v for k, v in given.items()}
        answer = await app.client.request(method, path, **options)
        # In order: the same headers, the same way round.
        headers = [(k, v) for k, v in answer.headers.items() if k not in (*TIMED, "x-request-id")]
        timed = {k: int(v) for k, v in answer.headers.items() if k in TIMED}
        body = orjson.loads(answer.content) if answer.content else None
        if isinstance(body, dict):
            body.pop("messageId", None)  # one of its own for every SMS
            if "verificationId" in body:  # one of its own for every send
                body["verificationId"] = "<id>"
            if "token" in body:  # signed per verify: there, not the same
                body["token"] = "<token>"
        assert answer.headers["x-request-id"]
        answers.append((answer.status_code, headers, body, timed))
    lines = [
        {k: v for k, v in vars(r).items() if k in ACCESS_FIELDS} | {"level": r.levelname}
        for r in caplog.records
        if r.name == "otpgate.access"
    ]
    after = counts()
    moved = {key: after[key] - before.get(key, 0.0) for key in after}
    return answers, lines, {key: value for key, value in moved.items() if value}


ACCESS_FIELDS = (
    "method",
    "route",
    "status",
    "client_ip",
    "code",
    "phone",
    "api_key_name",
    "end_user_ip",
    "msg",
)


async def test_both_modes_answer_log_and_count_alike(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="otpgate.access")
    results = []
    for mode in (True, False):
        settings = make_settings(
            tmp_path,
            sqlite_path=tmp_path / f"{mode}.sqlite3",
            fast_path=mode,
            rate_limit_max_requests=8,  # the last verify is over it
            api_auth="optional",
            api_keys=f"side:{API_KEY}",
        )
        sender = CapturingSender(name=f"capture-{mode}")
        components = build_components(settings, sender=sender)
        transport = httpx.ASGITransport(app=create_app(components))
        app = App(
            transport.app, components, httpx.AsyncClient(transport=transport, base_url="http://t")
        )
        try:
            results.append(await run(app, sender, caplog))
        finally:
            await app.close()
    (fast_answers, fast_lines, fast_counts), (stock_answers, stock_lines, stock_counts) = results
    for fast, stock in zip(fast_answers, stock_answers, strict=True):
        assert fast[:3] == stock[:3]
        assert fast[3].keys() == stock[3].keys()
        assert all(abs(fast[3][k] - stock[3][k]) <= 1 for k in fast[3])
    statuses = " ".join(str(status) for status, *_ in fast_answers)
    assert statuses == "200 429 400 400 415 413 400 400 200 400 429 405 200 200 404 401 400"
    assert fast_lines == stock_lines
    assert len(fast_lines) == len(fast_answers)
    # The keyed request spent its end user's budget (the caller's was spent), and was named.
    assert fast_lines[-1]["api_key_name"] == "side"
    assert fast_lines[-1]["end_user_ip"] == "2001:db8::7"
    assert fast_lines[-2]["code"] == "invalid_api_key"
    # The senders are named apart so that their sends are counted apart; the rest is shared.
    sends = {"otpgate_otp_sends_total", "otpgate_sms_send_duration_seconds_count"}

    def rename(key: Any) -> Any:
        return key[0], tuple((k, "capture" if k == "provider" else v) for k, v in key[1])

    assert {rename(k): v for k, v in fast_counts.items()} == {
        rename(k): v for k, v in stock_counts.items()
    }
    assert {k[0] for k in fast_counts} >= sends | {"otpgate_http_requests_total"}


# -- SNS Publish ------------------------------------------------------------------------------


def no_publisher(*args: Any, **kwargs: Any) -> Any:
    pytest.fail("the fast Publish path was used")


@pytest.mark.parametrize("reason", [None, "aiohttp.ClientTimeout takes no sock_read"])
async def test_sns_publish_on_the_stock_path(
    tmp_path: Path,
    stub_server: StubServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    reason: str | None,
) -> None:
    """FAST_PATH=false (no reason), or a failed check: aiobotocore's publish sends the SMS."""
    monkeypatch.setattr(fast_sns_publish, "SnsPublisher", no_publisher)
    monkeypatch.setattr(fast_sns_publish, "unavailable", lambda: reason)
    stub_server.respond = lambda _: publish_ok()
    settings = make_settings(
        tmp_path,
        fast_path=reason is not None,
        sms_provider="sns",
        sns_endpoint_url=stub_server.url,
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
    )
    with caplog.at_level(logging.WARNING, logger="otpgate.fast_path"):
        config = sns_config(settings)
        assert config.fast_path is False
        sns_config(settings)  # asked again: decided already
    warnings = [r.getMessage() for r in caplog.records if r.name == "otpgate.fast_path"]
    if reason is None:
        assert warnings == []
    else:
        [warning] = warnings
        assert "otpgate.delivery.fast_sns_publish" in warning and reason in warning
    sender = SnsSender(config)
    try:
        assert await sender.send(PHONE, "123456 is your code") == "stub-message-1"
    finally:
        await sender.close()
    [request] = stub_server.received
    assert request.form["Action"] == "Publish"
    assert request.headers["user-agent"].startswith("aiobotocore/")  # the SDK's own request


async def test_sns_publish_on_the_fast_path(tmp_path: Path, stub_server: StubServer) -> None:
    stub_server.respond = lambda _: publish_ok()
    settings = make_settings(
        tmp_path,
        sms_provider="sns",
        sns_endpoint_url=stub_server.url,
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
    )
    sender = SnsSender(sns_config(settings))
    try:
        assert await sender.send(PHONE, "123456 is your code") == "stub-message-1"
    finally:
        await sender.close()
    [request] = stub_server.received
    assert request.headers["user-agent"].startswith("otpgate/")


# -- the server protocol, chosen by `otpgate serve` before uvicorn starts ----------------------


def test_serve_configures_the_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ours = "otpgate.http.fast_protocol:HttpProtocol"
    assert uvicorn_config(make_settings(tmp_path), "127.0.0.1", 3000)["http"] == ours

    monkeypatch.setattr(fast_protocol, "unavailable", lambda: pytest.fail("checked"))
    stock = uvicorn_config(make_settings(tmp_path, fast_path=False), "127.0.0.1", 3000)
    assert "http" not in stock  # uvicorn's default

    monkeypatch.setattr(fast_path, "_reasons", {})
    monkeypatch.setattr(fast_path, "_warned", set())
    monkeypatch.setattr(fast_protocol, "unavailable", lambda: "STATUS_LINE is gone")
    with caplog.at_level(logging.WARNING, logger="otpgate.fast_path"):
        fallback = uvicorn_config(make_settings(tmp_path), "127.0.0.1", 3000)
    assert fallback == stock
    [warning] = caplog.records
    assert "otpgate.http.fast_protocol" in warning.getMessage()
    assert "STATUS_LINE is gone" in warning.getMessage()


def test_check_config_shows_each_fast_path_and_why_one_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otpgate.cli.config_report import describe
    from tests.conftest import make_settings

    monkeypatch.setattr(fast_protocol, "unavailable", lambda: "STATUS_LINE is gone")
    report = describe(make_settings(tmp_path))
    assert "(fast path) server protocol      off (STATUS_LINE is gone): uvicorn's own" in report
    assert "(fast path) hot routes           on" in report
    stock = describe(make_settings(tmp_path, fast_path=False))
    assert stock.count("off (FAST_PATH=false)") == len(fast_path.PARTS)
