"""The operators' API (/admin/v1/): every route behind an admin key, bad input refused
with a machine code, and every change made through one instance seen by another that
shares the store, as two instances behind a balancer would.

The apps run in-process (ASGI) on a clock the tests move, so a surge window can pass
without waiting for it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import httpx
import pytest

from otpgate.http.app import create_app
from otpgate.store.reference import MemoryStore
from otpgate.wiring import Store, build_components
from tests.conftest import Service, make_settings
from tests.fakes import CapturingSender

ADMIN_KEY = "admin-key-" + "a" * 32
OTHER_ADMIN_KEY = "admin-key-" + "b" * 32
API_KEY = "api-key-" + "k" * 32
ADMIN_KEYS = f"ops:{ADMIN_KEY},oncall:sha256:{hashlib.sha256(OTHER_ADMIN_KEY.encode()).hexdigest()}"
KEYED = {"authorization": f"Bearer {ADMIN_KEY}"}

PREFIX = "prefix:1212555"  # the first 7 digits of these numbers (PUMP_PREFIX_DIGITS)
BURST = [f"+121255501{n:02d}" for n in range(10)]
PUMP_WINDOW = 3600
# A quiet range answers sends; a burst past PUMP_PREFIX_MIN_SENDS in one window blocks
# it. Nothing else limits the tests' traffic.
OPEN = {
    "rate_limit_max_requests": 1000,
    "ip_max_phones": 1000,
    "pump_prefix_min_sends": 3,
    "pump_window_seconds": PUMP_WINDOW,
    "pump_block_seconds": 6 * PUMP_WINDOW,
}

# Every admin route, with a path that is well formed.
ROUTES = [
    ("GET", "/admin/v1/blocks"),
    ("DELETE", f"/admin/v1/blocks/prefix_blocked/{PREFIX}"),
    ("GET", "/admin/v1/phones/+12125550100"),
    ("GET", "/admin/v1/overrides"),
    ("GET", f"/admin/v1/overrides/deny/{PREFIX}"),
    ("PUT", f"/admin/v1/overrides/deny/{PREFIX}"),
    ("DELETE", "/admin/v1/overrides/exempt/country:GB"),
    ("GET", "/admin/v1/stats"),
]


class Clock:
    """The time every use case of the apps reads; a test moves it forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


# Which stores the cross-instance tests run on. Each opens a handle on one shared store
# per app, as each instance of the service opens its own.
@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_store(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], Store]:
    if store_kind == "memory":
        shared = MemoryStore()
        return lambda: shared
    if store_kind == "sqlite":
        from otpgate.store.sqlite import SqliteStore

        path = tmp_path / "shared.sqlite3"
        return lambda: SqliteStore(path)
    if store_kind == "redis":
        from otpgate.store.redis.store import RedisStore

        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        return lambda: RedisStore(url, prefix=prefix)
    raise AssertionError(store_kind)


@pytest.fixture
def clock() -> Clock:
    return Clock()


Build = Callable[..., Awaitable[Service]]


@pytest.fixture
async def build(
    tmp_path: Path, open_store: Callable[[], Store], clock: Clock
) -> AsyncIterator[Build]:
    """Build an instance of the service on the shared store; closed at teardown."""
    opened: list[Service] = []

    async def factory(*, base_url: str = "http://otpgate.test", **overrides: Any) -> Service:
        values = {"admin_api_keys": ADMIN_KEYS, **OPEN, **overrides}
        settings = make_settings(tmp_path, **values)
        components = build_components(
            settings, store=open_store(), sender=CapturingSender(), clock=clock
        )
        app = create_app(components)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)
        service = Service(client, components, app)
        opened.append(service)
        return service

    yield factory
    for service in opened:
        await service.client.aclose()
        await service.components.close()


def sender_of(service: Service) -> CapturingSender:
    sender = service.components.sender
    assert isinstance(sender, CapturingSender)
    return sender


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body == {
        "statusCode": status,
        "error": body["error"],
        "message": body["message"],
        "code": code,
    }
    assert body["error"] and body["message"]


async def pump(service: Service) -> list[int]:
    """A pumping burst: codes requested for many numbers of one prefix."""
    return [(await service.request(phone)).status_code for phone in BURST[:5]]


AUDIT_FIELDS = ("admin_key_name", "action", "kind", "scope", "reason", "list", "entry", "changed")


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The fields of each line on otpgate.audit (``at`` too, when it says when)."""
    return [
        {k: getattr(r, k) for k in (*AUDIT_FIELDS, "at") if hasattr(r, k)}
        for r in caplog.records
        if r.name == "otpgate.audit"
    ]


# --- who may call ---------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_wants_an_admin_key(build: Build, method: str, path: str) -> None:
    service = await build(api_keys=f"backend:{API_KEY}")
    for headers in (
        {},
        {"authorization": "Bearer " + "x" * 40},
        {"authorization": f"Bearer {API_KEY}"},  # a key of the API is no admin key
        {"authorization": f"Basic {ADMIN_KEY}"},
        {"authorization": "Bearer "},
    ):
        answer = await service.client.request(method, path, headers=headers)
        assert_error(answer, 401, "invalid_api_key")
        assert answer.headers["www-authenticate"] == "Bearer"
    # Two Authorization headers: which one counts is ambiguous, so neither does.
    twice = httpx.Headers([("authorization", f"Bearer {ADMIN_KEY}")] * 2)
    assert_error(await service.client.request(method, path, headers=twice), 401, "invalid_api_key")


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_answers_either_admin_key(build: Build, method: str, path: str) -> None:
    service = await build()
    for key in (ADMIN_KEY, OTHER_ADMIN_KEY):  # a plain key, and one configured by digest
        answer = await service.client.request(
            method, path, headers={"authorization": f"bearer {key}"}
        )
        assert answer.status_code in (200, 404), answer.text  # 404: nothing of that name
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["content-type"] == "application/json"
        if answer.status_code == 404:
            assert answer.json()["code"] in ("block_not_found", "override_not_found")


async def test_absent_while_admin_api_keys_is_unset(build: Build) -> None:
    service = await build(admin_api_keys="")
    for method, path in [*ROUTES, ("GET", "/admin"), ("GET", "/admin/dashboard.js")]:
        answer = await service.client.request(method, path, headers=KEYED)
        assert_error(answer, 404, "not_found")


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("phone", ["12125550100", "+1", "+1212555010x", "%2B", "+0123456789"])
async def test_a_malformed_number_is_400(build: Build, phone: str) -> None:
    service = await build()
    answer = await service.client.get(f"/admin/v1/phones/{phone}", headers=KEYED)
    assert_error(answer, 400, "invalid_phone_number")


@pytest.mark.parametrize(
    ("kind", "scope"),
    [
        ("prefix_blocked", PREFIX),  # none in force
        ("country_blocked", "country:US"),
        ("phone_locked", "+12125550100"),
        ("unknown_kind", PREFIX),
    ],
)
async def test_lifting_no_block_is_404(build: Build, kind: str, scope: str) -> None:
    service = await build()
    answer = await service.client.delete(f"/admin/v1/blocks/{kind}/{scope}", headers=KEYED)
    assert_error(answer, 404, "block_not_found")


@pytest.mark.parametrize(
    "entry",
    [
        "prefix:",
        "prefix:12a",
        "prefix:" + "1" * 16,
        "country:gb",
        "country:GBR",
        "ip:10.0.0.1",
        "GB",
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_a_bad_override_entry_is_400(build: Build, method: str, entry: str) -> None:
    service = await build()
    answer = await service.client.request(
        method, f"/admin/v1/overrides/deny/{entry}", headers=KEYED
    )
    assert_error(answer, 400, "invalid_override")
    assert (await service.client.get("/admin/v1/overrides", headers=KEYED)).json() == {
        "exempt": [],
        "deny": [],
    }


async def test_an_unknown_override_list_is_404(build: Build) -> None:
    service = await build()
    answer = await service.client.put(f"/admin/v1/overrides/allow/{PREFIX}", headers=KEYED)
    assert_error(answer, 404, "not_found")


# --- one instance acts, another sees ----------------------------------------------------------


async def test_a_burst_blocks_its_prefix_until_an_operator_lifts_it(
    build: Build, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first, second = await build(), await build()
    assert await pump(first) == [200, 200, 200, 429, 429]

    blocks = (await second.client.get("/admin/v1/blocks", headers=KEYED)).json()["blocks"]
    [block] = blocks
    assert block == {
        "kind": "prefix_blocked",
        "scope": PREFIX,
        "reason": "surge",
        "startedAt": block["startedAt"],
        "endsAt": block["endsAt"],
        "counts": {"sends": 4, "previous": 0},
    }
    assert block["startedAt"].endswith("Z") and block["endsAt"] > block["startedAt"]

    # A window later the surge rule alone would let the range through: the block holds.
    clock.advance(PUMP_WINDOW)
    assert_error(await first.request(BURST[6]), 429, "prefix_blocked")

    lifted = await second.client.delete(f"/admin/v1/blocks/prefix_blocked/{PREFIX}", headers=KEYED)
    assert lifted.status_code == 200
    assert lifted.json() == {"lifted": block}
    assert (await first.client.get("/admin/v1/blocks", headers=KEYED)).json() == {"blocks": []}
    assert (await first.request(BURST[7])).status_code == 200

    [line] = audit_lines(caplog)
    assert line == {
        "admin_key_name": "ops",
        "action": "lift_block",
        "kind": "prefix_blocked",
        "scope": PREFIX,
        "reason": "surge",
        "at": line["at"],
    }
    assert line["at"].endswith("Z")
    assert_no_key_logged(caplog)


async def test_a_locked_phone_is_seen_and_unlocked_from_another_instance(
    build: Build, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    lockout = {"phone_lockout_threshold": 2, "phone_lockout_base_seconds": 600}
    first, second = await build(**lockout), await build(**lockout)
    phone = BURST[0]
    sent = await first.request(phone)
    code = sender_of(first).last_code(phone)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(2):
        assert_error(await first.verify(phone, wrong), 400, "invalid_code")
    assert_error(await first.verify(phone, code), 429, "phone_locked")

    [block] = (await second.client.get("/admin/v1/blocks", headers=KEYED)).json()["blocks"]
    assert (block["kind"], block["scope"], block["reason"]) == ("phone_locked", phone, "failures")
    assert block["counts"] == {"failures": 2}
    report = (await second.client.get(f"/admin/v1/phones/{phone}", headers=KEYED)).json()
    assert report["consecutiveFailures"] == 2
    assert report["lockedUntil"] == block["endsAt"]
    assert report["verification"]["id"] == sent.json()["verificationId"]

    lift = await second.client.delete(f"/admin/v1/blocks/phone_locked/{phone}", headers=KEYED)
    assert lift.status_code == 200
    assert (await first.verify(phone, code)).status_code == 200
    [line] = audit_lines(caplog)
    assert line["scope"] == "+1212***0100"  # a phone is masked in the log, as everywhere
    ours = [r for r in caplog.records if r.name.startswith("otpgate")]
    assert phone not in " ".join(f"{r.getMessage()} {vars(r)}" for r in ours)


async def test_a_phone_report_says_what_is_pending_never_the_code(
    build: Build, clock: Clock
) -> None:
    first, second = await build(), await build()
    phone = BURST[0]
    quiet = await second.client.get(f"/admin/v1/phones/{phone}", headers=KEYED)
    assert quiet.json() == {
        "phoneNumber": phone,
        "codePending": False,
        "codeExpiresAt": None,
        "attempts": 0,
        "maxAttempts": 5,
        "cooldownEndsAt": None,
        "cooldownSeconds": 0,
        "sendsInWindow": 0,
        "sendLimit": 5,
        "sendWindowSeconds": 600,
        "consecutiveFailures": 0,
        "lastFailureAt": None,
        "lockedUntil": None,
        "verification": None,
    }

    sent = (await first.request(phone)).json()
    code = sender_of(first).last_code(phone)
    await first.verify(phone, f"{(int(code) + 1) % 1_000_000:06d}")
    clock.advance(10)
    answer = await second.client.get(f"/admin/v1/phones/{phone}", headers=KEYED)
    report = answer.json()
    assert report["codePending"] is True
    assert report["attempts"] == 1
    assert report["cooldownSeconds"] == 50
    assert report["sendsInWindow"] == 1
    assert report["consecutiveFailures"] == 1
    assert report["lastFailureAt"] is not None and report["lockedUntil"] is None
    verification = report["verification"]
    assert verification == {
        "id": sent["verificationId"],
        "status": "pending",
        "channel": "sms",
        "purpose": None,
        "createdAt": verification["createdAt"],
        "updatedAt": verification["updatedAt"],
        "expiresAt": report["codeExpiresAt"],
    }
    assert code not in answer.text
    assert not {"code", "codeHash", "hash", "otp"} & set(report)


async def test_overrides_deny_and_exempt_ranges_for_every_instance(
    build: Build, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first, second = await build(), await build()
    deny = f"/admin/v1/overrides/deny/{PREFIX}"
    assert_error(await second.client.get(deny, headers=KEYED), 404, "override_not_found")

    added = await first.client.put(deny, headers=KEYED)
    assert added.json() == {"list": "deny", "entry": PREFIX, "present": True, "changed": True}
    again = await first.client.put(deny, headers=KEYED)
    assert again.json()["changed"] is False
    assert (await second.client.get(deny, headers=KEYED)).json() == {
        "list": "deny",
        "entry": PREFIX,
        "present": True,
    }
    assert_error(await second.request(BURST[0]), 403, "range_denied")

    removed = await second.client.delete(deny, headers=KEYED)
    assert removed.json() == {"list": "deny", "entry": PREFIX, "present": False, "changed": True}
    assert (await first.request(BURST[0])).status_code == 200

    # An exempt range passes the surge guard: the same burst is never blocked.
    exempt = await second.client.put(f"/admin/v1/overrides/exempt/{PREFIX}", headers=KEYED)
    assert exempt.json()["changed"] is True
    await second.client.put("/admin/v1/overrides/deny/country:GB", headers=KEYED)
    assert (await first.client.get("/admin/v1/overrides", headers=KEYED)).json() == {
        "exempt": [PREFIX],
        "deny": ["country:GB"],
    }
    assert [(await first.request(phone)).status_code for phone in BURST[1:6]] == [200] * 5

    lines = [
        (line["action"], line["list"], line["entry"], line["changed"])
        for line in audit_lines(caplog)
    ]
    assert lines == [
        ("override_add", "deny", PREFIX, True),
        ("override_add", "deny", PREFIX, False),
        ("override_remove", "deny", PREFIX, True),
        ("override_add", "exempt", PREFIX, True),
        ("override_add", "deny", "country:GB", True),
    ]
    assert {line["admin_key_name"] for line in audit_lines(caplog)} == {"ops"}
    assert_no_key_logged(caplog)


async def test_stats_give_sends_approvals_and_conversion_per_range(build: Build) -> None:
    first, second = await build(), await build()
    assert (await second.client.get("/admin/v1/stats", headers=KEYED)).json() == {"ranges": []}
    for phone in BURST[:2]:
        await first.request(phone)
    await first.verify(BURST[0], sender_of(first).last_code(BURST[0]))
    assert (await first.request("+447400946000")).status_code == 200

    ranges = (await second.client.get("/admin/v1/stats", headers=KEYED)).json()["ranges"]
    half = {"sends": 2, "approvals": 1, "conversion": 0.5}
    none = {"sends": 1, "approvals": 0, "conversion": 0.0}
    assert ranges == [
        {"scope": "country:GB", "kind": "country", "hour": none, "day": none},
        {"scope": "country:US", "kind": "country", "hour": half, "day": half},
        {"scope": PREFIX, "kind": "prefix", "hour": half, "day": half},
        {"scope": "prefix:4474009", "kind": "prefix", "hour": none, "day": none},
    ]


def assert_no_key_logged(caplog: pytest.LogCaptureFixture) -> None:
    everything = caplog.text + " ".join(str(vars(r)) for r in caplog.records)
    for key in (ADMIN_KEY, OTHER_ADMIN_KEY):
        assert key not in everything
        assert hashlib.sha256(key.encode()).hexdigest() not in everything


# --- ADMIN_PORT -------------------------------------------------------------------------------

ADMIN_PORT = 9101


async def test_with_admin_port_only_that_port_serves_the_admin_routes(build: Build) -> None:
    main = await build(admin_port=ADMIN_PORT)
    admin = Service(
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=main.app),
            base_url=f"http://otpgate.test:{ADMIN_PORT}",
        ),
        main.components,
        main.app,
    )
    try:
        for method, path in [*ROUTES, ("GET", "/admin"), ("GET", "/admin/dashboard.css")]:
            assert_error(await main.client.request(method, path, headers=KEYED), 404, "not_found")
            on_admin = await admin.client.request(method, path, headers=KEYED)
            # 200, or 404 naming what it did not find: never a route missing.
            assert on_admin.status_code == 200 or on_admin.json()["code"] in (
                "block_not_found",
                "override_not_found",
            ), on_admin.text
        assert (await admin.client.get("/admin/v1/blocks")).status_code == 401
        # ... and its liveness, for a load balancer in front of it ...
        health = await admin.client.get("/health")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        # ... and nothing else: not the API, not the readiness, the docs or the widget.
        assert_error(await admin.request(BURST[0]), 404, "not_found")
        for path in ("/ready", "/docs", "/widget", "/metrics"):
            assert_error(await admin.client.get(path), 404, "not_found")
        # The icon the dashboard links to, and the one browsers ask for, are there too.
        for path in ("/favicon.svg", "/favicon.ico"):
            icon = await admin.client.get(path)
            assert icon.status_code == 200, path
            assert icon.headers["content-type"] == "image/svg+xml"
        assert (await main.request("+447400946000")).status_code == 200
        assert (await main.client.get("/health")).status_code == 200
    finally:
        await admin.client.aclose()


# --- the dashboard's page ---------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "src/otpgate/http/admin/dashboard"


async def test_the_dashboard_is_served_under_a_strict_policy(build: Build) -> None:
    service = await build()
    page = await service.client.get("/admin")  # static: the key is pasted into it
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "script-src 'self';" in policy and "style-src 'self';" in policy
    assert "unsafe" not in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    # Nothing inline for the policy to refuse, nothing from another origin.
    markup = page.text
    assert re.findall(r"<script[^>]*>", markup) == ['<script src="admin/dashboard.js" defer>']
    assert "<style" not in markup and " style=" not in markup
    assert not re.search(r"\son[a-z]+\s*=", markup)  # no event handler attributes
    assert '<link rel="icon" href="favicon.svg" type="image/svg+xml">' in markup
    assert (await service.client.get("/favicon.svg")).status_code == 200
    for path, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        asset = await service.client.get(f"/admin/{path}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert asset.headers["x-content-type-options"] == "nosniff"
    script = (DASHBOARD / "dashboard.js").read_text()
    assert "innerHTML" not in script and "eval(" not in script
    assert re.findall(r"https?://[^\s\"']+", script) == ["http://www.w3.org/2000/svg"]


def test_the_dashboard_files_are_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["otpgate"]
    for asset in DASHBOARD.iterdir():
        if asset.suffix in ("", ".py", ".pyc") or asset.name == "__pycache__":
            continue
        relative = f"http/admin/dashboard/{asset.name}"
        assert any(fnmatch(relative, glob) for glob in globs), relative
