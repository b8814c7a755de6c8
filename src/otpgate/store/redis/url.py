"""REDIS_URL, parsed once into a typed value both Redis links connect by.

The forms are the ones the ``limits`` library and Redis clients commonly write:
``redis://`` and ``rediss://`` (TLS) for one server, ``redis+unix://`` for a socket,
``redis+sentinel://`` for a master found through Sentinel, ``redis+cluster://`` and
``rediss+cluster://`` for Redis Cluster (seed nodes; ``redis_cluster`` finds the one
serving otpgate's slot). Anything otpgate would not honour (an unknown scheme, an
option it would ignore) is refused with a message saying what to write instead, so
a URL never means less than it says. Each scheme has its own parser in ``_PARSERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379


class RedisUrlError(ValueError):
    """REDIS_URL cannot be used; the message says why (never echoing a password)."""


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Login:
    """What a connection sends before its first command: AUTH and SELECT."""

    username: str | None = None
    password: str | None = None
    db: int = 0


@dataclass(frozen=True, slots=True)
class ServerUrl:
    """One server: ``redis://``, ``rediss://`` (tls) or ``redis+unix://`` (socket_path)."""

    address: HostPort | None
    socket_path: str | None
    tls: bool
    login: Login

    @property
    def tls_address(self) -> HostPort | None:
        """Where the server is, when it is reached over TLS."""
        return self.address if self.tls else None


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """A master named ``master_name``, found by asking ``sentinels``; login is the master's."""

    sentinels: tuple[HostPort, ...]
    master_name: str
    login: Login


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    """Redis Cluster: ``seeds`` are asked which node serves otpgate's slot; login is every
    node's (a cluster has database 0 only); ``tls`` for ``rediss+cluster://``."""

    seeds: tuple[HostPort, ...]
    tls: bool
    login: Login


RedisUrl = ServerUrl | SentinelUrl | ClusterUrl

_FORMS = "redis://, rediss://, redis+sentinel://, redis+cluster:// or redis+unix://"


def parse_redis_url(text: str) -> RedisUrl:
    """The value ``text`` stands for, or RedisUrlError saying what is wrong with it."""
    try:
        parts = urlsplit(text.strip())
    except ValueError as exc:
        raise RedisUrlError(f"not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    parser = _PARSERS.get(scheme)
    if parser is None:
        if scheme == "unix":
            raise RedisUrlError("write a socket as redis+unix:///path/to/redis.sock")
        shown = f"scheme '{scheme}'" if scheme else "a URL without a scheme"
        raise RedisUrlError(f"{shown} is not supported; use {_FORMS}")
    if parts.fragment:
        raise RedisUrlError("a #fragment means nothing to Redis; remove it")
    return parser(parts)


def _server(parts: SplitResult) -> ServerUrl:
    _options(parts, allowed=())
    if not parts.hostname:
        raise RedisUrlError(f"no host: write {parts.scheme}://host[:port][/db]")
    if "," in parts.netloc:
        raise RedisUrlError(
            f"several hosts are for redis+sentinel:// or redis+cluster://;"
            f" {parts.scheme}:// takes one"
        )
    return ServerUrl(
        address=HostPort(parts.hostname, _port(parts, DEFAULT_PORT)),
        socket_path=None,
        tls=parts.scheme.lower() == "rediss",
        login=_login(parts, _db(parts.path.strip("/"), "the path")),
    )


def _unix(parts: SplitResult) -> ServerUrl:
    options = _options(parts, allowed=("db",))
    if parts.netloc.rpartition("@")[2]:
        raise RedisUrlError("redis+unix:// takes a path, not a host: redis+unix:///path")
    if not parts.path:
        raise RedisUrlError("no socket path: write redis+unix:///path/to/redis.sock")
    return ServerUrl(
        address=None,
        socket_path=unquote(parts.path),
        tls=False,
        login=_login(parts, _db(options.get("db", "0"), "option 'db'")),
    )


def _sentinel(parts: SplitResult) -> SentinelUrl:
    _options(parts, allowed=())
    hosts = parts.netloc.rpartition("@")[2]
    sentinels = tuple(_host_port(h, DEFAULT_SENTINEL_PORT) for h in hosts.split(","))
    master, _, db = parts.path.strip("/").partition("/")
    if not master:
        raise RedisUrlError(
            "no master name: write redis+sentinel://host:26379[,host:26379...]/master-name"
        )
    return SentinelUrl(
        sentinels=tuple(dict.fromkeys(sentinels)),
        master_name=unquote(master),
        login=_login(parts, _db(db, "the path after the master name")),
    )


def _cluster(parts: SplitResult) -> ClusterUrl:
    _options(parts, allowed=())
    hosts = parts.netloc.rpartition("@")[2]
    if not hosts:
        raise RedisUrlError(f"no host: write {parts.scheme}://host:port[,host:port...]")
    seeds = tuple(_host_port(h, DEFAULT_PORT) for h in hosts.split(","))
    if _db(parts.path.strip("/"), "the path") != 0:
        raise RedisUrlError("Redis Cluster has database 0 only; remove the path")
    return ClusterUrl(
        seeds=tuple(dict.fromkeys(seeds)),
        tls=parts.scheme.lower() == "rediss+cluster",
        login=_login(parts, 0),
    )


def _sentinel_tls(parts: SplitResult) -> RedisUrl:
    raise RedisUrlError(
        f"TLS through Sentinel ({parts.scheme}://) is not supported yet;"
        " use redis+sentinel:// or one server over rediss://"
    )


_PARSERS: dict[str, Callable[[SplitResult], RedisUrl]] = {
    "redis": _server,
    "rediss": _server,
    "redis+unix": _unix,
    "redis+sentinel": _sentinel,
    "rediss+sentinel": _sentinel_tls,
    "redis+cluster": _cluster,
    "rediss+cluster": _cluster,
}

# Options other clients read from the query, and what otpgate offers instead.
_INSTEAD = {
    "ssl_ca_certs": "set REDIS_TLS_CA_FILE",
    "ssl_certfile": "set REDIS_TLS_CERT_FILE",
    "ssl_keyfile": "set REDIS_TLS_KEY_FILE",
    "ssl_cert_reqs": "certificates are always verified with rediss://",
    "ssl_check_hostname": "host names are always verified with rediss://",
    "password": "put it in the URL: redis://:password@host",
    "username": "put it in the URL: redis://user:password@host",
    "db": "put it in the path: redis://host:6379/<db>",
    "socket_timeout": "set REDIS_TIMEOUT_SECONDS",
    "socket_connect_timeout": "set REDIS_TIMEOUT_SECONDS",
}


def _options(parts: SplitResult, *, allowed: tuple[str, ...]) -> dict[str, str]:
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise RedisUrlError("the ?query is not name=value pairs joined by &") from None
    for name, value in pairs:
        if name not in allowed:
            instead = _INSTEAD.get(name, "otpgate would ignore it")
            raise RedisUrlError(
                f"option '{name}' is not supported with {parts.scheme}://; {instead}"
            )
        if name in options:
            raise RedisUrlError(f"option '{name}' is given twice")
        options[name] = value
    return options


def _port(parts: SplitResult, default: int) -> int:
    try:
        port = parts.port
    except ValueError:
        raise RedisUrlError("the port is not a number from 1 to 65535") from None
    if port == 0:
        raise RedisUrlError("the port is not a number from 1 to 65535")
    return default if port is None else port


def _host_port(text: str, default_port: int) -> HostPort:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``, from a comma-separated list."""
    parts = urlsplit(f"//{text}")
    if not text or not parts.hostname:
        raise RedisUrlError("a host in the list is empty: write host:port,host:port")
    return HostPort(parts.hostname, _port(parts, default_port))


def _db(text: str, where: str) -> int:
    if not text:
        return 0
    if not text.isdigit() or len(text) > 5:
        raise RedisUrlError(f"{where} must be a database number, 0 or more")
    return int(text)


def _login(parts: SplitResult, db: int) -> Login:
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username and not password:
        # redis-py reads user@host as a password-less login, which AUTH cannot send.
        raise RedisUrlError("a user without a password: write user:password@host")
    return Login(username=username, password=password or None, db=db)
