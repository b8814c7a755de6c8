"""Which master the sentinels name, when they disagree, refuse, stall or are gone.

Fake sentinels on loopback answer ``SENTINEL MASTER`` as told; the real failover is
tests/test_redis_sentinel.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import hiredis
import pytest

from otpgate.store.redis.link import RedisConnectionError, RedisMisconfigured
from otpgate.store.redis.sentinel import GRACE_SECONDS, Sentinels
from otpgate.store.redis.url import HostPort

NAME = "otp"
TIMEOUT = 0.5


def _bulk(text: str) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(text.encode()), text.encode())


def names(port: int, epoch: int) -> bytes:
    """A sentinel's ``SENTINEL MASTER`` reply: the master at ``port``, in ``epoch``."""
    fields = ["name", NAME, "ip", "127.0.0.1", "port", str(port), "flags", "master"]
    fields += ["config-epoch", str(epoch)]
    return b"*%d\r\n" % len(fields) + b"".join(map(_bulk, fields))


NO_SUCH_MASTER = b"-ERR No such master with that name\r\n"
NOAUTH = b"-NOAUTH Authentication required.\r\n"


@dataclass
class Fake:
    reply: bytes | None  # None: reads the question and never answers
    delay: float = 0.0


Start = Callable[..., Awaitable[list[HostPort]]]


@pytest.fixture
async def sentinels() -> AsyncIterator[Start]:
    servers: list[asyncio.Server] = []

    async def start(*fakes: Fake) -> list[HostPort]:
        addresses = []
        for fake in fakes:

            async def serve(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fake: Fake = fake
            ) -> None:
                commands = hiredis.Reader()
                while data := await reader.read(4096):
                    commands.feed(data)
                    while (command := commands.gets()) is not False:
                        if command[0].upper() != b"SENTINEL":
                            writer.write(b"+OK\r\n")  # the client's CLIENT SETINFO
                        elif fake.reply is not None:
                            await asyncio.sleep(fake.delay)
                            writer.write(fake.reply)
                        await writer.drain()
                writer.close()

            server = await asyncio.start_server(serve, "127.0.0.1", 0)
            servers.append(server)
            addresses.append(HostPort("127.0.0.1", server.sockets[0].getsockname()[1]))
        return addresses

    yield start
    for server in servers:
        server.close()


def gone() -> HostPort:
    """An address nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return HostPort("127.0.0.1", s.getsockname()[1])


async def ask(addresses: list[HostPort]) -> tuple[HostPort, float]:
    asked = Sentinels(addresses, NAME, TIMEOUT)
    started = time.monotonic()
    try:
        return await asked.master(), time.monotonic() - started
    finally:
        await asked.close()


async def test_the_highest_epoch_wins(sentinels: Start) -> None:
    """Mid-failover: the sentinel that led it names the new master first."""
    addresses = await sentinels(Fake(names(7001, 3)), Fake(names(7002, 4), delay=0.02))
    master, took = await ask([*addresses, gone()])
    assert master == HostPort("127.0.0.1", 7002)
    assert took < GRACE_SECONDS + 0.1


async def test_a_late_answer_past_the_grace_is_not_waited_for(sentinels: Start) -> None:
    addresses = await sentinels(Fake(names(7001, 3)), Fake(names(7002, 4), delay=0.4))
    master, took = await ask(addresses)
    assert master == HostPort("127.0.0.1", 7001)
    assert took < GRACE_SECONDS + 0.1


async def test_a_stalled_sentinel_costs_nothing_while_another_answers(sentinels: Start) -> None:
    addresses = await sentinels(Fake(None), Fake(names(7001, 1)))
    master, took = await ask(addresses)
    assert master == HostPort("127.0.0.1", 7001)
    assert took < GRACE_SECONDS + 0.1


async def test_no_sentinel_answering_is_an_outage_within_the_timeout(sentinels: Start) -> None:
    addresses = await sentinels(Fake(None))
    started = time.monotonic()
    with pytest.raises(RedisConnectionError) as failed:
        await ask([*addresses, gone()])
    assert not isinstance(failed.value, RedisMisconfigured)
    assert time.monotonic() - started < TIMEOUT + 0.2
    assert "no sentinel answered" in str(failed.value)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (NO_SUCH_MASTER, "no sentinel knows a master named 'otp'"),
        (NOAUTH, "refused to name the master .*refused: Authentication required"),
    ],
)
async def test_sentinels_that_answer_without_a_master_are_a_misconfiguration(
    sentinels: Start, reply: bytes, reason: str
) -> None:
    addresses = await sentinels(Fake(reply), Fake(reply))
    with pytest.raises(RedisMisconfigured, match=reason):
        await ask([*addresses, gone()])
