"""REDIS_URL and REDIS_TLS_*: every form otpgate takes, and every refusal, by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from otpgate.cli.config_report import describe, redact_url
from otpgate.config.settings import ConfigError, Settings, load_settings
from otpgate.store.redis.url import (
    ClusterUrl,
    HostPort,
    Login,
    RedisUrlError,
    SentinelUrl,
    ServerUrl,
    parse_redis_url,
)
from tests.tls_certs import TestAuthority


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("redis://cache", ServerUrl(HostPort("cache", 6379), None, False, Login())),
        ("redis://cache:6380/", ServerUrl(HostPort("cache", 6380), None, False, Login())),
        (
            "redis://app:p%40ss%3Aw@cache:6380/3",
            ServerUrl(HostPort("cache", 6380), None, False, Login("app", "p@ss:w", 3)),
        ),
        (
            "redis://:s3cret@127.0.0.1/0",
            ServerUrl(HostPort("127.0.0.1", 6379), None, False, Login(None, "s3cret", 0)),
        ),
        (
            "rediss://cache.internal:6380",
            ServerUrl(HostPort("cache.internal", 6380), None, True, Login()),
        ),
        ("REDISS://Cache", ServerUrl(HostPort("cache", 6379), None, True, Login())),
        ("redis://[::1]:7000/2", ServerUrl(HostPort("::1", 7000), None, False, Login(db=2))),
        (
            "redis+unix:///run/redis/redis.sock?db=4",
            ServerUrl(None, "/run/redis/redis.sock", False, Login(db=4)),
        ),
        (
            "redis+unix://:pw@/tmp/r.sock",
            ServerUrl(None, "/tmp/r.sock", False, Login(password="pw")),
        ),
        (
            "redis+sentinel://s1:26379,s2,[::1]:26380/mymaster",
            SentinelUrl(
                (HostPort("s1", 26379), HostPort("s2", 26379), HostPort("::1", 26380)),
                "mymaster",
                Login(),
            ),
        ),
        (
            "redis+sentinel://:pw@s1/otp%20master/5",
            SentinelUrl((HostPort("s1", 26379),), "otp master", Login(password="pw", db=5)),
        ),
        (
            "redis+sentinel://s1,s1:26379/m",  # the same sentinel twice is asked once
            SentinelUrl((HostPort("s1", 26379),), "m", Login()),
        ),
        (
            "redis+cluster://n1:7000,n2:7001,[::1]",
            ClusterUrl(
                (HostPort("n1", 7000), HostPort("n2", 7001), HostPort("::1", 6379)),
                False,
                Login(),
            ),
        ),
        (
            "rediss+cluster://app:p%40ss@clustercfg.otp.cache.amazonaws.com:6379/0",
            ClusterUrl(
                (HostPort("clustercfg.otp.cache.amazonaws.com", 6379),),
                True,
                Login("app", "p@ss"),
            ),
        ),
        (
            "redis+cluster://:pw@n1:7000,n1:7000/",  # the same seed twice is asked once
            ClusterUrl((HostPort("n1", 7000),), False, Login(password="pw")),
        ),
    ],
)
def test_forms(url: str, parsed: object) -> None:
    assert parse_redis_url(url) == parsed


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://n1:7000/2", "Redis Cluster has database 0 only; remove the path"),
        ("redis+cluster://n1/x", "the path must be a database number"),
        ("redis+cluster://", "no host: write redis+cluster://host:port[,host:port...]"),
        ("redis+cluster://:pw@", "no host"),
        ("redis+cluster://n1,,n2", "a host in the list is empty"),
        ("rediss+cluster://n1?ssl_cert_reqs=none", "option 'ssl_cert_reqs' is not supported"),
        ("redis+cluster://n1?read_from_replicas=true", "otpgate would ignore it"),
        ("rediss+sentinel://s1/m", "TLS through Sentinel (rediss+sentinel://) is not supported"),
        ("unix:///tmp/redis.sock", "write a socket as redis+unix:///path/to/redis.sock"),
        ("http://cache:6379", "scheme 'http' is not supported; use redis://, rediss://"),
        ("cache:6379", "scheme 'cache' is not supported"),
        ("//cache:6379", "a URL without a scheme is not supported"),
        (
            "rediss://cache?ssl_cert_reqs=none",
            "option 'ssl_cert_reqs' is not supported with rediss://; certificates are always",
        ),
        ("rediss://cache?ssl_check_hostname=false", "option 'ssl_check_hostname' is not supported"),
        (
            "rediss://cache?ssl_ca_certs=/ca.pem",
            "option 'ssl_ca_certs' is not supported with rediss://; set REDIS_TLS_CA_FILE",
        ),
        ("rediss://cache?ssl_certfile=/c.pem", "set REDIS_TLS_CERT_FILE"),
        ("rediss://cache?ssl_keyfile=/c.key", "set REDIS_TLS_KEY_FILE"),
        (
            "redis://cache?socket_timeout=1",
            "option 'socket_timeout' is not supported with redis://; set REDIS_TIMEOUT_SECONDS",
        ),
        ("redis://cache?db=2", "option 'db' is not supported with redis://; put it in the path"),
        ("redis://cache?password=x", "option 'password' is not supported"),
        (
            "redis://cache?protocol=3",
            "option 'protocol' is not supported with redis://; otpgate would ignore it",
        ),
        (
            "redis+sentinel://s1/m?sentinel_password=x",
            "option 'sentinel_password' is not supported with redis+sentinel://",
        ),
        ("redis+unix:///r.sock?db=1&db=2", "option 'db' is given twice"),
        ("redis+unix:///r.sock?timeout", "the ?query is not name=value pairs"),
        ("redis://cache#primary", "a #fragment means nothing to Redis"),
        ("redis://", "no host: write redis://host[:port][/db]"),
        ("redis://:pw@/0", "no host"),
        ("redis://cache/zero", "the path must be a database number"),
        ("redis://cache/1/2", "the path must be a database number"),
        ("redis://cache:65536", "the port is not a number from 1 to 65535"),
        ("redis://cache:0", "the port is not a number from 1 to 65535"),
        ("redis://cache:port", "the port is not a number"),
        ("redis://a:6379,b:6379", "several hosts are for redis+sentinel://"),
        ("redis://app@cache", "a user without a password"),
        ("redis+unix://cache/r.sock", "redis+unix:// takes a path, not a host"),
        ("redis+unix://", "no socket path"),
        ("redis+unix:///r.sock?db=x", "option 'db' must be a database number"),
        ("redis+sentinel://s1:26379,s2:26379", "no master name: write redis+sentinel://"),
        ("redis+sentinel://s1:26379,s2:26379/", "no master name"),
        ("redis+sentinel://s1,,s2/m", "a host in the list is empty"),
        ("redis+sentinel://s1:x/m", "the port is not a number"),
        ("redis+sentinel://s1/m/x", "the path after the master name must be a database number"),
        ("redis://[::1", "not a URL"),
    ],
)
def test_refusals(url: str, message: str) -> None:
    with pytest.raises(RedisUrlError) as refused:
        parse_redis_url(url)
    assert message in str(refused.value)


def test_a_refusal_never_shows_the_password() -> None:
    for url in ("redis://:hunter2@cache?ssl_cert_reqs=none", "redis+cluster://:hunter2@n1:7000/1"):
        with pytest.raises(RedisUrlError) as refused:
            parse_redis_url(url)
        assert "hunter2" not in str(refused.value)


def test_check_config_masks_a_sentinel_password() -> None:
    assert (
        redact_url("redis+sentinel://:hunter2@s1:26379,s2:26379/mymaster")
        == "redis+sentinel://:****@s1:26379,s2:26379/mymaster"
    )


def test_check_config_masks_a_cluster_password() -> None:
    assert (
        redact_url("rediss+cluster://app:hunter2@n1:7000,n2:7001")
        == "rediss+cluster://app:****@n1:7000,n2:7001"
    )


# -- the settings: each refusal names its variable ----------------------------------------


def settings(**values: Any) -> Settings:
    return load_settings(_env_file=None, **values)


def refusal(**values: Any) -> str:
    with pytest.raises(ConfigError) as refused:
        settings(**values)
    return str(refused.value)


@pytest.fixture(autouse=True)
def no_redis_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        if name.startswith("redis_"):
            monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def authority(tmp_path: Path) -> TestAuthority:
    return TestAuthority(tmp_path)


def test_settings_refuse_a_bad_cluster_url_naming_redis_url() -> None:
    message = refusal(redis_url="redis+cluster://n1:7000,n2:7001/3")
    assert "REDIS_URL: Redis Cluster has database 0 only; remove the path" in message


def test_settings_take_a_cluster_url_with_the_default_prefix() -> None:
    s = settings(redis_url="redis+cluster://n1:7000,n2:7001")
    assert s.redis_key_prefix == "otpgate:"  # written {otpgate}: by the store


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("", "Redis Cluster needs a prefix to make the hash tag of every key"),
        (":", "Redis Cluster needs a prefix"),
        ("otp{gate:", "a brace that is not a whole hash tag"),
        ("otp{}gate:", "a brace that is not a whole hash tag"),
        ("otp}gate:", "a brace that is not a whole hash tag"),
    ],
)
def test_settings_refuse_a_prefix_cluster_cannot_keep_in_one_slot(
    prefix: str, message: str
) -> None:
    refused = refusal(redis_url="redis+cluster://n1:7000", redis_key_prefix=prefix)
    assert f"REDIS_KEY_PREFIX: {message}" in refused
    settings(redis_url="redis://cache", redis_key_prefix=prefix)  # one server: any prefix


def test_check_config_names_the_prefix_a_cluster_is_written_under() -> None:
    out = describe(settings(redis_url="redis+cluster://n1:7000", redis_key_prefix="otpgate:"))
    assert (
        "(store)                          redis cluster, every key under {otpgate}: (hash slot"
        in out
    )
    assert "(store)                          redis, phone records span 10 min\n" in describe(
        settings(redis_url="redis://c")
    )


@pytest.mark.parametrize(
    ("overrides", "span"),
    [
        ({}, "10 min"),
        ({"otp_ttl_seconds": 480}, "10 min"),  # within the span: nothing moves
        ({"otp_ttl_seconds": 900}, "20 min"),
        ({"phone_send_window_seconds": 3600}, "80 min"),
    ],
)
def test_check_config_tells_the_span_phone_records_are_filed_by(
    overrides: dict[str, int], span: str
) -> None:
    """Instances share phone records only with the same span: operators compare it
    before a change of the code's lifetime, the cooldown or the send window."""
    out = describe(settings(redis_url="redis://c", **overrides))
    assert f"phone records span {span}\n" in out


def test_settings_take_tls_files_with_rediss_cluster(authority: TestAuthority) -> None:
    s = settings(redis_url="rediss+cluster://n1:7000", redis_tls_ca_file=authority.ca_file)
    assert s.redis_tls.ca_file == authority.ca_file


def test_settings_refuse_an_option_naming_it() -> None:
    message = refusal(redis_url="rediss://:hunter2@cache?ssl_cert_reqs=none")
    assert "REDIS_URL: option 'ssl_cert_reqs' is not supported" in message
    assert "hunter2" not in message


def test_settings_take_rediss_with_every_tls_file(authority: TestAuthority) -> None:
    client = authority.issue("client", client=True)
    s = settings(
        redis_url="rediss://cache:6380/0",
        redis_tls_ca_file=authority.ca_file,
        redis_tls_cert_file=client.cert,
        redis_tls_key_file=client.key,
    )
    assert s.redis_tls.ca_file == authority.ca_file
    assert (s.redis_tls.cert_file, s.redis_tls.key_file) == (client.cert, client.key)


def test_settings_refuse_a_missing_tls_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    for name in ("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file"):
        message = refusal(redis_url="rediss://cache", **{name: missing})
        assert f"{name.upper()}: no such file: {missing}" in message


def test_settings_want_the_certificate_and_its_key_together(authority: TestAuthority) -> None:
    client = authority.issue("client", client=True)
    alone = refusal(redis_url="rediss://cache", redis_tls_cert_file=client.cert)
    assert "REDIS_TLS_KEY_FILE: required with REDIS_TLS_CERT_FILE" in alone
    alone = refusal(redis_url="rediss://cache", redis_tls_key_file=client.key)
    assert "REDIS_TLS_CERT_FILE: required with REDIS_TLS_KEY_FILE" in alone


def test_settings_refuse_tls_files_without_rediss(authority: TestAuthority) -> None:
    for url in ("redis://cache", "redis+sentinel://s1/m", "redis+cluster://n1:7000", None):
        message = refusal(redis_url=url, redis_tls_ca_file=authority.ca_file)
        assert "REDIS_TLS_CA_FILE: set, but REDIS_URL" in message
        assert "TLS needs a rediss:// or rediss+cluster:// URL" in message


def test_settings_refuse_files_tls_cannot_load(tmp_path: Path, authority: TestAuthority) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    message = refusal(redis_url="rediss://cache", redis_tls_ca_file=junk)
    assert "REDIS_TLS_CA_FILE: cannot load CA certificates from it" in message
    client, other = authority.issue("client", client=True), authority.issue("other", client=True)
    message = refusal(
        redis_url="rediss://cache", redis_tls_cert_file=client.cert, redis_tls_key_file=other.key
    )
    assert (
        "REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE: cannot load the certificate and its key"
        in message
    )
