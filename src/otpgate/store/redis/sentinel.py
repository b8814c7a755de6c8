"""Where the master is now, by asking Sentinel; both links follow its answer.

Every sentinel is asked at once (``SENTINEL MASTER <name>``); once one answers,
the others get a moment more, and the answer with the highest configuration
epoch wins: during a failover the sentinel that led it knows first, and the
others may name the old master for a second or two.

Asked at every reconnection, and once a second while connected
(``SentinelWatch``): a switchover (``SENTINEL FAILOVER``) leaves the old master
running, still a master, for ~10 s until Sentinel demotes it, and a link that
stayed on it would write codes the demotion then throws away. The pipelined link
also checks ``ROLE`` after connecting, as the Sentinel client guidelines ask.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisPyConnectionError
from redis.exceptions import TimeoutError as RedisPyTimeoutError

from otpgate.store.redis.asking import Asking
from otpgate.store.redis.link import RedisConnectionError, RedisMisconfigured
from otpgate.store.redis.url import HostPort

# After the first answer, how long the other sentinels may still answer.
GRACE_SECONDS = 0.1
# How often a connected link asks whether the master moved.
RECHECK_SECONDS = 1.0


class _Refused(Exception):
    """The sentinel answered with an error (it wants a password, or is no sentinel)."""


class Sentinels:
    """The sentinels of one master, each with a client kept for the next question."""

    def __init__(self, addresses: Sequence[HostPort], master_name: str, timeout: float) -> None:
        self.master_name = master_name
        self._timeout = timeout
        self._clients = {
            address: Redis(
                host=address.host,
                port=address.port,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
            )
            for address in addresses
        }

    async def master(self) -> HostPort:
        """The master's address, by the freshest answer within the timeout.

        RedisMisconfigured when sentinels answer but none knows the name (or each
        refuses the question); RedisConnectionError when none answers.
        """
        answers, refusals, silences = await self._answers()
        if answers:
            return max(answers, key=lambda answer: answer[0])[1]
        problems = [*dict.fromkeys(p for p in refusals + silences if p)]
        detail = f" ({'; '.join(problems)})" if problems else ""
        if None in refusals:
            raise RedisMisconfigured(
                f"no sentinel knows a master named {self.master_name!r}{detail}"
            )
        if refusals:
            raise RedisMisconfigured(f"the sentinels refused to name the master{detail}")
        raise RedisConnectionError(f"no sentinel answered{detail}")

    async def _answers(
        self,
    ) -> tuple[list[tuple[int, HostPort]], list[str | None], list[str]]:
        """Each sentinel's epoch and address, or refusal (None: "no such master"), or why
        it did not answer; the others get GRACE_SECONDS after the first answer."""
        answers: list[tuple[int, HostPort]] = []
        refusals: list[str | None] = []
        silences: list[str] = []
        questions = [self._ask(*pair) for pair in self._clients.items()]
        async with Asking(questions, self._timeout) as asking:
            async for task in asking:
                try:
                    answer = task.result()
                except _Refused as exc:
                    refusals.append(str(exc))
                except RedisConnectionError as exc:
                    silences.append(str(exc))
                else:
                    if answer is None:
                        refusals.append(None)
                        continue
                    if not answers:
                        asking.shorten(GRACE_SECONDS)
                    answers.append(answer)
            if asking.timed_out:
                silences.append(f"no answer within {self._timeout:g}s")
        return answers, refusals, silences

    async def _ask(self, where: HostPort, client: Redis) -> tuple[int, HostPort] | None:
        """The master's configuration epoch and address, by one sentinel; None when
        it has no master of that name."""
        try:
            reply = await client.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "MASTER", self.master_name
            )
        except (ResponseError, AuthenticationError) as exc:
            if "no such master" in str(exc).lower():
                return None
            raise _Refused(f"{where} refused: {exc}") from None
        except (RedisPyConnectionError, RedisPyTimeoutError) as exc:
            raise RedisConnectionError(f"{where}: {type(exc).__name__}") from None
        try:
            state = _fields(reply)
            return int(state["config-epoch"]), HostPort(state["ip"], int(state["port"]))
        except (KeyError, TypeError, ValueError):
            raise _Refused(f"{where} answered something other than a master's state") from None

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()


def _fields(reply: Any) -> dict[str, str]:
    """A state reply as text fields: a flat name, value list (RESP2) or a map (RESP3)."""
    pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=True)
    return {_text(name): _text(value) for name, value in pairs}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SentinelWatch:
    """Once a second while a link is connected: when the sentinels name a master other
    than ``connected()``, ``moved(address)`` (the link drops its connections)."""

    def __init__(
        self,
        sentinels: Sentinels,
        connected: Callable[[], HostPort | None],
        moved: Callable[[HostPort], Awaitable[None]],
    ) -> None:
        self._sentinels = sentinels
        self._connected = connected
        self._moved = moved
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Watch from now on (idempotent); within a running event loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            current = self._connected()
            if current is None:
                continue  # not connected: the next call asks anyway
            try:
                master = await self._sentinels.master()
            except RedisConnectionError:
                continue  # no answer now; the connection stays as long as it works
            if master != current:
                await self._moved(master)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
