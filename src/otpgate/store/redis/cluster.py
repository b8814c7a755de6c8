"""Redis Cluster: which node serves otpgate's one hash slot now (``redis_slot``).

``SlotOwner`` asks the seed nodes of ``redis+cluster://``, and the nodes last seen
serving the slot, all at once (``CLUSTER SLOTS``: every Redis since 3.0 and every
managed service answers it) and takes the first answer that names the slot's
master. A stale answer is cheap: the node it names answers ``-MOVED`` (or refuses the
connection), and the link asks again. The pipelined link asks it at every
(re)connection; redis-py's ``RedisCluster`` finds nodes by its own ``CLUSTER SLOTS``.
At start-up the store asks it whichever link it uses, to tell a cluster that cannot
work (no cluster at all, a refused password or certificate) from one that is down.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisPyConnectionError
from redis.exceptions import TimeoutError as RedisPyTimeoutError

from otpgate.store.redis.asking import Asking
from otpgate.store.redis.link import (
    ClientCertificateRequired,
    RedisConnectionError,
    RedisMisconfigured,
)
from otpgate.store.redis.tls import (
    RedisTls,
    certificate_refused,
    refusal_text,
    wants_client_certificate,
)
from otpgate.store.redis.url import ClusterUrl, HostPort


class _Refused(Exception):
    """The node answered with an error (wants a password, or is no cluster node), its
    TLS certificate was refused (``certificate``: what OpenSSL found wrong), or it wants
    a client certificate (``misconfigured``: the error start-up stops on)."""

    def __init__(
        self,
        message: str,
        certificate: str | None = None,
        misconfigured: RedisMisconfigured | None = None,
    ) -> None:
        super().__init__(message)
        self.certificate = certificate
        self.misconfigured = misconfigured


class SlotOwner:
    """Which node serves ``slot`` now, by asking the seeds and the nodes last seen
    serving it; each with a client kept for the next question."""

    def __init__(
        self, url: ClusterUrl, slot: int, timeout: float, tls: RedisTls | None = None
    ) -> None:
        self.slot = slot
        self._seeds = url.seeds
        self._timeout = timeout
        self._options: dict[str, Any] = {
            "username": url.login.username,
            "password": url.login.password,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        if url.tls:
            self._options |= (tls or RedisTls()).redis_py_options()
        self._tls = tls
        self._serving: tuple[HostPort, ...] = ()  # the slot's master and replicas, last seen
        self._clients: dict[HostPort, Redis] = {}

    async def owner(self) -> HostPort:
        """The master serving the slot, by the first node to name one within the timeout.

        RedisMisconfigured when every node asked refuses to say (cluster support
        disabled, a password or certificate refused); RedisConnectionError when none
        answers, or none knows a master for the slot (the cluster is down).
        """
        asked = [*dict.fromkeys((*self._serving, *self._seeds))]
        for gone in self._clients.keys() - set(asked):
            await self._clients.pop(gone).aclose()
        serving, refusals, silences = await self._answers(asked)
        if serving:
            self._serving = serving
            return serving[0]
        detail = "; ".join(dict.fromkeys([*map(str, refusals), *silences]))
        if refusals and len(refusals) == len(asked):
            for refusal in refusals:
                if refusal.misconfigured is not None:
                    raise refusal.misconfigured
            certificates = [r.certificate for r in refusals if r.certificate is not None]
            if certificates:  # worded as one server's refusal is (fast_connection)
                raise RedisMisconfigured(
                    f"the server's TLS certificate was refused: {certificates[0]}"
                )
            raise RedisMisconfigured(
                f"no cluster node would say where slot {self.slot} is ({detail})"
            )
        raise RedisConnectionError(
            f"no cluster node named the master of slot {self.slot} ({detail})"
        )

    async def _answers(
        self, asked: list[HostPort]
    ) -> tuple[tuple[HostPort, ...], list[_Refused], list[str]]:
        """The first answer naming the slot's nodes (or ()), else each refusal, and why
        the others did not answer."""
        refusals: list[_Refused] = []
        silences: list[str] = []
        async with Asking([self._ask(node) for node in asked], self._timeout) as asking:
            async for task in asking:
                try:
                    serving = task.result()
                except _Refused as exc:
                    refusals.append(exc)
                except RedisConnectionError as exc:
                    silences.append(str(exc))
                else:
                    if serving:
                        return serving, refusals, silences
                    silences.append(f"no node serves slot {self.slot}")
            if asking.timed_out:
                silences.append(f"no answer within {self._timeout:g}s")
        return (), refusals, silences

    async def _ask(self, node: HostPort) -> tuple[HostPort, ...]:
        """The slot's master and replicas by ``node``'s CLUSTER SLOTS; () when it names none."""
        client = self._clients.get(node)
        if client is None:
            client = self._clients[node] = Redis(host=node.host, port=node.port, **self._options)
        try:
            ranges = await client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
        except (ResponseError, AuthenticationError) as exc:
            raise _Refused(f"{node} refused: {exc}") from None
        except (RedisPyConnectionError, RedisPyTimeoutError) as exc:
            refused = certificate_refused(exc)
            if refused is not None:
                reason = refusal_text(refused)
                raise _Refused(f"{node}: its TLS certificate was refused", reason) from None
            if wants_client_certificate(exc, self._tls):
                wanted = ClientCertificateRequired()
                raise _Refused(f"{node}: {wanted}", misconfigured=wanted) from None
            raise RedisConnectionError(f"{node}: {type(exc).__name__}") from None
        try:
            return _serving(ranges, self.slot, node)
        except (IndexError, TypeError, ValueError):
            raise _Refused(f"{node} answered something other than its slots") from None

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()


def _serving(ranges: Sequence[Any], slot: int, asked: HostPort) -> tuple[HostPort, ...]:
    """From a CLUSTER SLOTS reply: the master and replicas of the range holding ``slot``.

    Each node is ``[endpoint, port, id, ...]``; an endpoint that is empty, ``?`` or
    missing means "the host you asked" (Redis's unknown endpoint)."""
    for first, last, *nodes in ranges:
        if int(first) <= slot <= int(last) and nodes:
            return tuple(_address(node, asked) for node in nodes)
    return ()


def _address(node: Sequence[Any], asked: HostPort) -> HostPort:
    endpoint = node[0].decode() if isinstance(node[0], bytes) else node[0]
    host = asked.host if endpoint in (None, "", "?") else str(endpoint)
    return HostPort(host, int(node[1]))
