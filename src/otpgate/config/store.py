"""The store: SQLite by default, Redis when REDIS_URL is set."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from otpgate.config.section import Section
from otpgate.store.redis.slot import PrefixError, cluster_prefix
from otpgate.store.redis.tls import RedisTls, TlsFileError
from otpgate.store.redis.url import ClusterUrl, RedisUrlError, ServerUrl, parse_redis_url


class StoreSettings(Section):
    """Where codes, limits and verifications are kept. Every worker and instance sharing
    one store shares every limit. SQLite (one file, one machine) unless REDIS_URL selects
    Redis: a server, Sentinel, Cluster or a Unix socket."""

    SECTION_TITLE: ClassVar[str] = "Store"

    sqlite_path: Path = Field(
        Path(".otpgate/otpgate.sqlite3"),
        description="The SQLite store's file, while REDIS_URL is unset; its directory is"
        " created when missing.",
    )
    send_journal_dir: Path = Field(
        Path(".otpgate/sends"),
        description="Where each worker journals the sends whose outcome it does not know"
        " yet (two short appends per send, no fsync), so that when a worker dies mid-send,"
        " or the service stops with a send's store step still queued, another worker"
        " voids its charges: a send answered with an error is never charged. One"
        " directory per host, for the workers sharing one store; created when missing.",
    )
    redis_url: str | None = Field(
        None,
        description="Selects the Redis store: redis://host:6379/0, rediss:// (TLS, always"
        " verified), redis+unix:///path/to/redis.sock?db=0,"
        " redis+sentinel://s1:26379,s2:26379/mymaster, or redis+cluster://n1:6379,n2:6379"
        " (seed nodes; rediss+cluster:// over TLS). A password in the URL is redacted"
        " wherever it is shown.",
    )
    redis_tls_ca_file: Path | None = Field(
        None,
        description="With rediss:// or rediss+cluster://: CA certificates (PEM) trusted"
        " besides the system's.",
    )
    redis_tls_cert_file: Path | None = Field(
        None,
        description="With rediss:// or rediss+cluster://: a client certificate (PEM), for"
        " servers that ask for one (mutual TLS); needs REDIS_TLS_KEY_FILE.",
    )
    redis_tls_key_file: Path | None = Field(
        None, description="The private key (PEM) of REDIS_TLS_CERT_FILE; both or neither."
    )
    redis_key_prefix: str = Field(
        "otpgate:",
        description="Prefix of every key; on Redis Cluster it carries a hash tag, so every"
        " key is in one slot: otpgate: is written {otpgate}:.",
    )
    redis_timeout_seconds: float = Field(
        0.5, gt=0, le=30, description="Seconds Redis may take to connect, and to answer a command."
    )

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_redis_url(value)
            except RedisUrlError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")
    @classmethod
    def _check_tls_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @property
    def redis_tls(self) -> RedisTls:
        return RedisTls(self.redis_tls_ca_file, self.redis_tls_cert_file, self.redis_tls_key_file)


def redis_tls_problems(settings: StoreSettings) -> list[str]:
    """REDIS_TLS_* against REDIS_URL and each other, and the files loaded as TLS would."""
    given = {
        "REDIS_TLS_CA_FILE": settings.redis_tls_ca_file,
        "REDIS_TLS_CERT_FILE": settings.redis_tls_cert_file,
        "REDIS_TLS_KEY_FILE": settings.redis_tls_key_file,
    }
    names = [name for name, path in given.items() if path is not None]
    if not names:
        return []
    url = parse_redis_url(settings.redis_url) if settings.redis_url else None
    if not (isinstance(url, ServerUrl | ClusterUrl) and url.tls):
        return [
            f"{name}: set, but REDIS_URL {'is unset' if url is None else 'does not use TLS'};"
            " TLS needs a rediss:// or rediss+cluster:// URL"
            for name in names
        ]
    if settings.redis_tls_cert_file is not None and settings.redis_tls_key_file is None:
        return ["REDIS_TLS_KEY_FILE: required with REDIS_TLS_CERT_FILE (the certificate's key)"]
    if settings.redis_tls_key_file is not None and settings.redis_tls_cert_file is None:
        return ["REDIS_TLS_CERT_FILE: required with REDIS_TLS_KEY_FILE (the key's certificate)"]
    try:
        settings.redis_tls.context()
    except TlsFileError as exc:
        if exc.which == "ca":
            return [f"REDIS_TLS_CA_FILE: {exc}"]
        return [f"REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE: {exc}"]
    return []


def redis_cluster_problems(settings: StoreSettings) -> list[str]:
    """REDIS_KEY_PREFIX against a redis+cluster:// REDIS_URL: its keys must share one slot."""
    if not settings.redis_url:
        return []
    try:
        url = parse_redis_url(settings.redis_url)
    except RedisUrlError:
        return []  # REDIS_URL's own check says why
    if not isinstance(url, ClusterUrl):
        return []
    try:
        cluster_prefix(settings.redis_key_prefix)
    except PrefixError as exc:
        return [f"REDIS_KEY_PREFIX: {exc}"]
    return []
