"""The stock way to Redis: redis-py's own asyncio client, behind the store's RedisLink.

It costs more CPU per call than ``fast_connection`` (a connection pool and
redis-py's command layer) but uses only redis-py's public API: ``Redis`` for one
server, ``Sentinel(...).master_for(...)`` for a master found through Sentinel
(which asks again whenever it connects, and turns a ``-READONLY`` reply into a
connection error). Its ``discover_master`` is given ``redis_sentinel``'s answer,
and that module's watch, so both links find and follow the master alike. The
store uses it with FAST_PATH=false, or when ``fast_connection.unavailable()``
says the installed hiredis lacks what the fast connection reaches into.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisPyConnectionError
from redis.exceptions import TimeoutError as RedisPyTimeoutError

from otpgate.store.redis.link import (
    ClientCertificateRequired,
    RedisConnectionError,
    RedisMisconfigured,
    RedisReplyError,
)
from otpgate.store.redis.sentinel import Sentinels, SentinelWatch
from otpgate.store.redis.tls import (
    RedisTls,
    certificate_refused,
    demands_client_certificate,
    refusal_text,
    wants_client_certificate,
)
from otpgate.store.redis.url import ClusterUrl, HostPort, SentinelUrl, ServerUrl


class _AskingSentinel(Sentinel):
    """redis-py's Sentinel, finding the master as the pipelined link does."""

    def __init__(self, sentinels: Sentinels) -> None:
        super().__init__([])  # type: ignore[no-untyped-call]
        self.asked = sentinels
        self.master: HostPort | None = None  # the last address given to a connection

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        try:
            self.master = await self.asked.master()
        except RedisConnectionError as exc:
            raise MasterNotFoundError(str(exc)) from exc  # what redis-py's pool expects
        return self.master.host, self.master.port


class StockConnection:
    def __init__(
        self, url: ServerUrl | SentinelUrl, *, timeout: float, tls: RedisTls | None = None
    ) -> None:
        # No retries: with Redis down the store must answer StoreUnavailable within the
        # timeout, as the fast connection does (redis-py's default would retry with backoff).
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "username": url.login.username,
            "password": url.login.password,
            "db": url.login.db,
        }
        self._tls = tls
        self._timeout = timeout
        # Asked when a TLS connection is lost without a reason (ClientCertificateRequired).
        self._tls_server = url.tls_address if isinstance(url, ServerUrl) else None
        self._sentinel: _AskingSentinel | None = None
        self._watch: SentinelWatch | None = None
        self._client: Redis
        if isinstance(url, SentinelUrl):
            self._sentinel = _AskingSentinel(Sentinels(url.sentinels, url.master_name, timeout))
            self._client = self._sentinel.master_for(url.master_name, redis_class=Redis, **options)
            self._watch = SentinelWatch(self._sentinel.asked, self._connected_to, self._moved)
        elif url.address is None:
            self._client = Redis(unix_socket_path=url.socket_path, **options)
        else:
            if url.tls:
                options |= (tls or RedisTls()).redis_py_options()
            self._client = Redis(host=url.address.host, port=url.address.port, **options)

    def _connected_to(self) -> HostPort | None:
        return None if self._sentinel is None else self._sentinel.master

    async def _moved(self, master: HostPort) -> None:
        if self._connected_to() not in (None, master):
            await self._client.connection_pool.disconnect()  # the next call asks anew

    async def execute(self, *args: Any) -> Any:
        if self._watch is not None:
            self._watch.start()
        try:
            return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
        except NoScriptError as exc:
            # redis-py strips the error code from the message; the store reads it.
            raise RedisReplyError(f"NOSCRIPT {exc}") from exc
        except ReadOnlyError as exc:
            # A demoted master (Sentinel's pool handles this itself): drop the
            # connections, so the next call connects anew.
            await self._client.connection_pool.disconnect()
            raise RedisConnectionError(f"READONLY {exc}") from exc
        except ResponseError as exc:
            raise RedisReplyError(str(exc)) from exc
        except (RedisPyConnectionError, RedisPyTimeoutError) as exc:
            error = _connection_error(exc, self._tls)
            if type(error) is RedisConnectionError and await self._wants_certificate(exc):
                error = ClientCertificateRequired()
            raise error from exc

    async def _wants_certificate(self, exc: Exception) -> bool:
        """Whether a TLS connection lost without a reason was a server that wants a client
        certificate, its alert lost to the reset our first command caused."""
        at = self._tls_server
        if at is None or isinstance(exc, RedisPyTimeoutError):
            return False
        return await demands_client_certificate(
            at.host, at.port, self._tls, self._timeout, patient=False
        )

    async def close(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
        await self._client.aclose()
        if self._sentinel is not None:
            await self._sentinel.asked.close()


class StockClusterConnection:
    """redis-py's ``RedisCluster``; ``slot`` is otpgate's, where PING (no key) goes."""

    def __init__(
        self, url: ClusterUrl, *, timeout: float, tls: RedisTls | None = None, slot: int = 0
    ) -> None:
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "username": url.login.username,
            "password": url.login.password,
        }
        if url.tls:
            options |= (tls or RedisTls()).redis_py_options()
        self._client = RedisCluster(
            startup_nodes=[ClusterNode(seed.host, seed.port) for seed in url.seeds],
            # Only otpgate's slot matters: a cluster missing others still serves it.
            require_full_coverage=False,
            # No retry after a connection error (the call answers 503 at once and the
            # next one asks CLUSTER SLOTS again); -MOVED and -ASK are still followed.
            retry=Retry(NoBackoff(), 0),
            # A -MOVED only updates where the slot is. By default every fifth one also
            # closes every connection, those other calls are using too: during a
            # failover, under concurrent calls, that failed calls the move had spared.
            reinitialize_steps=0,
            **options,
        )
        self._timeout = timeout
        self._slot = slot
        self._tls = tls

    async def execute(self, *args: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                if args[0] == "PING":
                    await self._client.initialize()
                    node = self._client.nodes_manager.get_node_from_slot(self._slot)
                    return await self._client.execute_command(*args, target_nodes=node)
                return await self._client.execute_command(*args)
        except NoScriptError as exc:
            raise RedisReplyError(f"NOSCRIPT {exc}") from exc
        except (ClusterDownError, TryAgainError) as exc:
            # The command did not run: the cluster is failing over or moving the slot.
            raise RedisConnectionError(f"{type(exc).__name__}: {exc}") from exc
        except ResponseError as exc:
            raise RedisReplyError(str(exc)) from exc
        except (
            RedisPyConnectionError,
            RedisPyTimeoutError,
            RedisClusterException,
            ClusterError,
        ) as exc:
            raise _connection_error(exc, self._tls) from exc
        except TimeoutError as exc:
            raise RedisConnectionError(f"no answer within {self._timeout:g}s") from exc
        except Exception as exc:
            # RedisCluster can fail otherwise while its view of the cluster changes under
            # concurrent calls (seen: AttributeError, a connection closed by a refresh
            # while another call was opening it). Still an outage of this call: a 503.
            raise RedisConnectionError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._client.aclose()


def _connection_error(exc: Exception, tls: RedisTls | None) -> RedisConnectionError:
    """What redis-py's connection error means: a certificate refused either way, or an
    outage that may pass."""
    refused = certificate_refused(exc)
    if refused is not None:
        return RedisMisconfigured(
            f"the server's TLS certificate was refused: {refusal_text(refused)}"
        )
    if wants_client_certificate(exc, tls):
        return ClientCertificateRequired()
    return RedisConnectionError(f"{type(exc).__name__}: {exc}")
