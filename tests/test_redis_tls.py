"""rediss://: a real TLS-only redis-server, both links, verification always on.

A CA made by the test signs the server's certificate (for 127.0.0.1) and a client's.
The store does a request/verify round over TLS, mutual TLS too; a CA that did not sign
the server's certificate, or a certificate for another host name, stops start-up with
a one-line reason, the same from both links, at the store and from `otpgate serve`. So
does a server that wants a client certificate (`tls-auth-clients yes`) when none is
configured, naming REDIS_TLS_CERT_FILE, from `otpgate serve` and `otpgate check-config`;
after start-up it is logged once as that, not as an outage.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.limits import Lockout
from otpgate.domain.ports import Issued, SendRequest
from otpgate.store.redis.link import ClientCertificateRequired
from otpgate.store.redis.store import RedisStore
from otpgate.store.redis.tls import RedisTls
from tests.redis_server import PrivateRedis, ServerTls
from tests.service_process import OTPGATE, ServiceProcess, service_env
from tests.tls_certs import TestAuthority

pytestmark = pytest.mark.integration  # every test here starts a redis-server

LINKS = [pytest.param(True, id="fast"), pytest.param(False, id="stock")]
PHONE = "+12125550142"
REFUSED = "REDIS_URL: the server's TLS certificate was refused: "
WANTS_CERTIFICATE = str(ClientCertificateRequired())


@pytest.fixture
def authority(tmp_path: Path) -> TestAuthority:
    return TestAuthority(tmp_path, "test")


@pytest.fixture
def other_authority(tmp_path: Path) -> TestAuthority:
    return TestAuthority(tmp_path, "other")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[PrivateRedis]]:
    """Servers a test starts, stopped (by pid) at its end whatever happened."""
    started: list[PrivateRedis] = []
    yield started
    for server in started:
        server.stop()


def tls_redis(
    tmp_path: Path,
    servers: list[PrivateRedis],
    authority: TestAuthority,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    *,
    mutual: bool = False,
) -> PrivateRedis:
    cert = authority.issue("server", hosts=hosts)
    client = authority.issue("client", client=True) if mutual else None
    tls = ServerTls(
        cert.cert, cert.key, authority.ca_file, (client.cert, client.key) if client else None
    )
    server = PrivateRedis(tmp_path / f"redis-{len(servers)}", tls=tls)
    servers.append(server)
    server.start()
    return server


async def request_and_verify(store: RedisStore) -> None:
    now = time.time()
    code_hash = b"\x42" * 32
    request = SendRequest(PHONE, code_hash, ttl_seconds=300, cooldown_seconds=0, send_id="tls")
    assert isinstance(await store.issue(request, now), Issued)
    attempt = await store.begin_verify(PHONE, 300, now, Lockout())
    assert (attempt.attempts, attempt.code_hash) == (1, code_hash)
    assert await store.consume(PHONE, code_hash, now) is True


@pytest.mark.parametrize("fast_path", LINKS)
async def test_a_request_and_verify_over_tls(
    tmp_path: Path, servers: list[PrivateRedis], authority: TestAuthority, fast_path: bool
) -> None:
    server = tls_redis(tmp_path, servers, authority)
    store = RedisStore(server.url, fast_path=fast_path, tls=RedisTls(authority.ca_file))
    try:
        assert await store.configuration_problem() is None
        await request_and_verify(store)
    finally:
        await store.close()


@pytest.mark.parametrize("fast_path", LINKS)
async def test_mutual_tls_presents_the_client_certificate(
    tmp_path: Path, servers: list[PrivateRedis], authority: TestAuthority, fast_path: bool
) -> None:
    server = tls_redis(tmp_path, servers, authority, mutual=True)
    client = authority.issue("client", client=True)
    store = RedisStore(
        server.url,
        fast_path=fast_path,
        tls=RedisTls(authority.ca_file, client.cert, client.key),
    )
    anonymous = RedisStore(
        server.url, timeout=0.3, fast_path=fast_path, tls=RedisTls(authority.ca_file)
    )
    try:
        await request_and_verify(store)
        with pytest.raises(StoreUnavailable):  # the server wants a certificate
            await anonymous.ping()
    finally:
        await store.close()
        await anonymous.close()


@pytest.mark.parametrize("fast_path", LINKS)
async def test_a_server_that_wants_a_client_certificate_is_a_configuration_problem(
    tmp_path: Path,
    servers: list[PrivateRedis],
    authority: TestAuthority,
    fast_path: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = tls_redis(tmp_path, servers, authority, mutual=True)
    store = RedisStore(
        server.url, timeout=0.5, fast_path=fast_path, tls=RedisTls(authority.ca_file)
    )
    now = time.time()
    request = SendRequest(PHONE, b"\x42" * 32, ttl_seconds=300, cooldown_seconds=0, send_id="m")
    try:
        assert await store.configuration_problem() == WANTS_CERTIFICATE
        assert "REDIS_TLS_CERT_FILE" in WANTS_CERTIFICATE
        assert "REDIS_TLS_KEY_FILE" in WANTS_CERTIFICATE
        # After start-up: each request is a 503, and the reason is logged once, as itself.
        with caplog.at_level(logging.INFO, logger="otpgate"):
            for _ in range(3):
                with pytest.raises(StoreUnavailable):
                    await store.issue(request, now)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(errors) == 1, errors
        assert WANTS_CERTIFICATE in errors[0]
        assert "cannot be used as configured" in errors[0]
        # The server gone is an outage again, not a missing certificate.
        server.stop()
        with pytest.raises(StoreUnavailable) as gone:
            await store.configuration_problem()
        assert not isinstance(gone.value.__cause__, ClientCertificateRequired)
    finally:
        await store.close()


async def refusals(url: str, tls: RedisTls) -> list[str | None]:
    """What each link's start-up check says; each also answers a request with 503."""
    said = []
    for fast_path in (True, False):
        store = RedisStore(url, timeout=0.5, fast_path=fast_path, tls=tls)
        try:
            said.append(await store.configuration_problem())
            with pytest.raises(StoreUnavailable):
                await store.ping()
        finally:
            await store.close()
    return said


async def test_a_ca_that_did_not_sign_the_certificate_is_refused_by_both_links(
    tmp_path: Path,
    servers: list[PrivateRedis],
    authority: TestAuthority,
    other_authority: TestAuthority,
) -> None:
    server = tls_redis(tmp_path, servers, authority)
    fast, stock = await refusals(server.url, RedisTls(other_authority.ca_file))
    assert fast == stock
    assert fast == (
        "the server's TLS certificate was refused: self-signed certificate in certificate chain"
    )


@pytest.mark.parametrize(
    ("host", "mismatch"),
    [("127.0.0.1", "IP address mismatch"), ("localhost", "Hostname mismatch")],
)
async def test_a_certificate_for_another_host_is_refused_by_both_links(
    tmp_path: Path,
    servers: list[PrivateRedis],
    authority: TestAuthority,
    host: str,
    mismatch: str,
) -> None:
    server = tls_redis(tmp_path, servers, authority, ("otpgate-redis.example",))
    url = server.url.replace("127.0.0.1", host)
    fast, stock = await refusals(url, RedisTls(authority.ca_file))
    assert fast == stock
    assert fast == (
        f"the server's TLS certificate was refused: {mismatch},"
        f" certificate is not valid for '{host}'."
    )


# -- `otpgate serve` ------------------------------------------------------------------------


@pytest.mark.parametrize("fast_path", ["true", "false"])
def test_serve_over_tls_sends_and_verifies_a_code(
    tmp_path: Path, servers: list[PrivateRedis], authority: TestAuthority, fast_path: str
) -> None:
    """On a server that wants a client certificate (`tls-auth-clients yes`), given one."""
    redis = tls_redis(tmp_path, servers, authority, mutual=True)
    client = authority.issue("client", client=True)
    service = ServiceProcess(
        tmp_path,
        REDIS_URL=redis.url,
        REDIS_TLS_CA_FILE=str(authority.ca_file),
        REDIS_TLS_CERT_FILE=str(client.cert),
        REDIS_TLS_KEY_FILE=str(client.key),
        FAST_PATH=fast_path,
    )
    try:
        service.wait_ready()
        assert service.post("/api/v1/request-otp", {"phoneNumber": PHONE}).status_code == 200
        sms = service.wait_for_line(lambda line: f"console SMS to {PHONE}" in line)
        code = re.findall(r"\b\d{6}\b", sms.split("]", 1)[1])[0]
        answer = service.post("/api/v1/verify-otp", {"phoneNumber": PHONE, "otp": code})
        assert answer.status_code == 200, answer.text
        with redis.client() as direct:  # the code went through this server
            assert direct.dbsize() > 0
    finally:
        out = service.stop()
    assert "Traceback" not in out, out
    assert "not reachable" not in out, out


@pytest.mark.parametrize(
    ("fast_path", "hosts"),
    [
        pytest.param("true", None, id="fast-wrong-ca"),
        pytest.param("false", ("otpgate-redis.example",), id="stock-other-host"),
    ],
)
def test_serve_refuses_to_start_on_a_certificate_it_cannot_trust(
    tmp_path: Path,
    servers: list[PrivateRedis],
    authority: TestAuthority,
    other_authority: TestAuthority,
    fast_path: str,
    hosts: tuple[str, ...] | None,
) -> None:
    redis = tls_redis(tmp_path, servers, authority, hosts or ("127.0.0.1",))
    trusted = authority if hosts else other_authority
    env = service_env(
        tmp_path,
        REDIS_URL=redis.url,
        REDIS_TLS_CA_FILE=str(trusted.ca_file),
        FAST_PATH=fast_path,
        PORT="1",  # never listened on: start-up stops before
    )
    started = time.monotonic()
    proc = subprocess.run(
        [*OTPGATE, "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"otpgate: {REFUSED}" in proc.stderr
    assert (
        "IP address mismatch" if hosts else "self-signed certificate in certificate chain"
    ) in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert time.monotonic() - started < 15


def otpgate_run(tmp_path: Path, command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OTPGATE, command],
        env=service_env(tmp_path, PORT="1", **env),  # never listened on
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("fast_path", ["true", "false"])
@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_start_up_refuses_a_server_that_wants_a_client_certificate(
    tmp_path: Path,
    servers: list[PrivateRedis],
    authority: TestAuthority,
    fast_path: str,
    command: str,
) -> None:
    redis = tls_redis(tmp_path, servers, authority, mutual=True)
    env = {"REDIS_URL": redis.url, "REDIS_TLS_CA_FILE": str(authority.ca_file)}
    proc = otpgate_run(tmp_path, command, FAST_PATH=fast_path, **env)
    assert proc.returncode == 2, proc.stderr
    assert f"otpgate: REDIS_URL: {WANTS_CERTIFICATE}" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "not reachable" not in proc.stderr
    if command == "check-config":
        # With the certificate and its key, the same server is fine.
        client = authority.issue("client", client=True)
        given = {"REDIS_TLS_CERT_FILE": str(client.cert), "REDIS_TLS_KEY_FILE": str(client.key)}
        proc = otpgate_run(tmp_path, command, FAST_PATH=fast_path, **env, **given)
        assert proc.returncode == 0, proc.stderr
        assert "configuration OK" in proc.stdout
        assert "not reachable" not in proc.stderr
