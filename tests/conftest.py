"""Shared fixtures: settings, both stores, a Redis, an SNS emulator.

Redis-backed tests use the server at REDIS_URL (default redis://127.0.0.1:6379/0)
under a unique key prefix that is deleted afterwards. When none answers there, the
session starts a redis-server of its own on a free loopback port (and says so), and
stops it at the end; without redis-server they fail with a message, never skip.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from otpgate.config.settings import Settings
from otpgate.domain.ports import OtpStore, SmsSender
from otpgate.http.app import create_app
from otpgate.store.redis.store import RedisStore
from otpgate.store.sqlite import SqliteStore
from otpgate.wiring import Components, build_components
from tests.fakes import CapturingSender

HASH_SECRET = "test-secret-" + "x" * 40
# FACTOR_ENCRYPTION_KEYS for settings in production (one 32-byte key, in base64).
FACTOR_KEYS = "k1:ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY="

pytest_plugins = [
    "tests.sns_emulator",
    "tests.redis_server",  # redis_url: REDIS_URL's Redis, or a redis-server of its own
    "tests.redis_sentinel",
    "tests.redis_cluster",
    "tests.http_stub",
    "tests.smtp_server",
    "tests.credential_db",
]


# Fixtures that reach a server or start a process: a test that uses one is in the
# integration tier, which `make test-fast` leaves out (`make test` runs everything).
INTEGRATION_FIXTURES = frozenset(
    {
        "redis_url",
        "redis_prefix",
        "private_redis",
        "sentinel_group",
        "redis_cluster",
        "sns_emulator",
        "sns_settings",
        "signing_sns_emulator",
        "server",  # a running `otpgate serve` (tests/service_process.py)
        "serve_two_workers",
        "widget_server",  # tests/test_widget_browser.py: the service, and ...
        "chromium",  # ... the system's Chromium (make browser)
        "postgres_database",  # tests/credential_db.py: a database on the PostgreSQL server
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        if (
            INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ()))
            or params.get("store_kind") in ("redis", "redis-cluster")
            or params.get("database_url") == "postgresql"
        ):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own, deleted afterwards."""
    prefix = f"otpgate-test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "app_env": "development",
        "sqlite_path": tmp_path / "otpgate.sqlite3",
        "send_journal_dir": tmp_path / "sends",
        "otp_hash_secret": HASH_SECRET,
        "sms_provider": "console",
        "redis_url": None,
        "log_level": "debug",
        # The development signing key, created at the first build (like a fresh checkout's).
        "token_dev_key_file": tmp_path / "token-signing-key.pem",
        # The credential database and its development key, beside the hot store's file.
        "database_url": f"sqlite:///{tmp_path / 'credentials.sqlite3'}",
        "factor_encryption_key_file": tmp_path / "factor-encryption-key",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(params=["sqlite", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# A module that runs on Redis Cluster too (tests/redis_cluster.py: one cluster for the
# module, a hash-tagged prefix per test) overrides ``store_kind`` with these.
STORES_AND_CLUSTER = ["sqlite", "redis", "redis-cluster"]


@pytest.fixture
def store_settings(
    request: pytest.FixtureRequest, store_kind: str, tmp_path: Path
) -> dict[str, Any]:
    """Settings overrides that select the parametrised store."""
    if store_kind == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")
        # A new app asks the cluster's nodes where the slot is: under the whole suite's
        # load that can outlast the 0.5 s default, which these tests are not about.
        return {
            "redis_url": cluster.url,
            "redis_key_prefix": f"otpgate-test:{uuid.uuid4().hex}:",
            "redis_timeout_seconds": 5.0,
        }
    if store_kind == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        return {"redis_url": url, "redis_key_prefix": prefix}
    return {"sqlite_path": tmp_path / "otpgate.sqlite3"}


@pytest.fixture
async def store(store_settings: dict[str, Any], tmp_path: Path) -> AsyncIterator[OtpStore]:
    s: OtpStore
    if "redis_url" in store_settings:
        s = RedisStore(store_settings["redis_url"], prefix=store_settings["redis_key_prefix"])
    else:
        s = SqliteStore(store_settings["sqlite_path"])
    yield s
    await s.close()


@dataclass
class Service:
    """One running app (in-process ASGI) with its client and components."""

    client: httpx.AsyncClient
    components: Components
    app: Any = None
    settings: Any = None  # what the components were built from

    def from_ip(self, ip: str) -> Service:
        """The same app, seen from another client address."""
        transport = httpx.ASGITransport(app=self.app, client=(ip, 40000))
        client = httpx.AsyncClient(transport=transport, base_url="http://otpgate.test")
        return Service(client, self.components, self.app, self.settings)

    async def request(self, phone: str, **kw: Any) -> httpx.Response:
        return await self.client.post("/api/v1/request-otp", json={"phoneNumber": phone}, **kw)

    async def verify(self, phone: str, otp: str, **kw: Any) -> httpx.Response:
        return await self.client.post(
            "/api/v1/verify-otp", json={"phoneNumber": phone, "otp": otp}, **kw
        )


ServiceFactory = Callable[..., Awaitable[Service]]


@pytest.fixture(params=[True, False], ids=["fast", "stock"])
def fast_path(request: pytest.FixtureRequest) -> bool:
    """FAST_PATH for the apps ``make_service`` builds: every fast path, or none.

    A module whose subject has no fast path can pin it with a fixture of its own.
    """
    return bool(request.param)


# For a module whose fast paths do not depend on the store (SNS delivery): both modes on
# SQLite, and the fast one on Redis too. Used as the module's ``pytestmark``.
STOCK_ON_SQLITE_ONLY = pytest.mark.parametrize(
    ("store_kind", "fast_path"),
    [("sqlite", True), ("redis", True), ("sqlite", False)],
    ids=["sqlite-fast", "redis-fast", "sqlite-stock"],
    indirect=True,
)


@pytest.fixture
async def make_service(
    tmp_path: Path, store_settings: dict[str, Any], fast_path: bool
) -> AsyncIterator[ServiceFactory]:
    """Build apps on the parametrised store and FAST_PATH; every app is closed at teardown."""
    opened: list[Service] = []

    async def factory(
        sender: SmsSender | None = None, *, real_sender: bool = False, **overrides: Any
    ) -> Service:
        """A CapturingSender unless given one, or ``real_sender`` builds it from settings."""
        settings = make_settings(
            tmp_path, **{**store_settings, "fast_path": fast_path, **overrides}
        )
        if not real_sender:
            sender = sender or CapturingSender()
        components = build_components(settings, sender=sender)
        app = create_app(components)
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://otpgate.test")
        service = Service(client, components, app, settings)
        opened.append(service)
        return service

    yield factory
    for service in opened:
        await service.client.aclose()
        await service.components.close()
