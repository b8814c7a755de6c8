"""After a Redis restart under request-otp load, the service is back within 3 s.

A real ``otpgate serve`` (two workers) on a private ``redis-server``, SMS through a
receiver that counts what it delivers, and clients sending request-otp as fast as they
are answered. Redis is stopped for 5 s and started again, empty. What the outage left
(sends whose store step timed out, to void) must not hold up the new sends: throughput
is back to 80% of its level before the outage within 3 s of Redis answering, and every
200 had its SMS, no more.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson

from tests.http_stub import Received, Reply, StubServer
from tests.redis_server import PrivateRedis
from tests.service_process import ServiceProcess

CLIENTS = 24
BIN = 0.25  # seconds per throughput sample


class CountingReceiver:
    def __init__(self) -> None:
        self.stub = StubServer()
        self.delivered: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.stub.respond = self._respond

    def _respond(self, received: Received) -> Reply:
        phone = orjson.loads(received.body)["phoneNumber"]
        with self._lock:
            self.delivered[phone] += 1
        return Reply(202, orjson.dumps({"messageId": f"m-{phone}"}))


async def _load(
    base: str, until: float, answers: list[tuple[float, int, str]], started: float, n: int
) -> None:
    """One client: request-otp for a new phone each time, as fast as it is answered."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for sent in range(1_000_000):
            if time.monotonic() >= until:
                return
            phone = f"+1212{2_000_000 + n * 100_000 + sent:07d}"
            try:
                r = await client.post("/api/v1/request-otp", json={"phoneNumber": phone})
                status = r.status_code
            except httpx.TransportError:
                status = 0
            answers.append((time.monotonic() - started, status, phone))


def _rate(answers: list[tuple[float, int, str]], start: float, end: float) -> float:
    return sum(1 for at, status, _ in answers if start <= at < end and status == 200) / (
        end - start
    )


def test_throughput_is_back_within_3s_of_redis_answering_again(tmp_path: Path) -> None:
    receiver = CountingReceiver()
    receiver.stub.start()
    redis = PrivateRedis(tmp_path / "redis")
    redis.start()
    service = ServiceProcess(
        tmp_path,
        workers=2,
        REDIS_URL=redis.url,
        REDIS_TIMEOUT_SECONDS="0.5",
        SMS_PROVIDER="webhook",
        SMS_WEBHOOK_URL=f"{receiver.stub.url}/sms",
        SMS_WEBHOOK_SECRET="w" * 40,
        ALLOWED_COUNTRIES="US",
        PHONE_NUMBER_CHECK="possible",
        LOG_LEVEL="warning",
        # What is measured is the sends, not the limits.
        RATE_LIMIT_MAX_REQUESTS="1000000",
        IP_MAX_PHONES="1000000",
        GLOBAL_SMS_PER_HOUR="10000000",
        COUNTRY_SMS_PER_HOUR="10000000",
        PUMP_PREFIX_MIN_SENDS="10000000",
        PUMP_COUNTRY_MIN_SENDS="10000000",
        CONVERSION_GUARD="false",
    )
    answers: list[tuple[float, int, str]] = []
    try:
        service.wait_ready()
        started = time.monotonic()
        outage_at, outage_seconds, total = 4.0, 5.0, 14.0
        back: list[float] = []

        def outage() -> None:
            time.sleep(outage_at)  # the scenario's timeline, not a synchronisation
            redis.stop()
            time.sleep(outage_seconds)
            redis.start()  # returns once it answers PING
            back.append(time.monotonic() - started)

        chaos = threading.Thread(target=outage)
        chaos.start()

        async def clients() -> None:
            await asyncio.gather(
                *(_load(service.base, started + total, answers, started, n) for n in range(CLIENTS))
            )

        asyncio.run(clients())
        chaos.join()
    finally:
        out = service.stop()
        redis.stop()
        receiver.stub.stop()
    assert "Traceback" not in out, out

    [answering] = back
    before = _rate(answers, 1.0, outage_at)
    assert before > 50, f"too little load to measure: {before:.0f}/s"
    recovered_after = None
    at = answering
    while at + BIN <= total:
        if _rate(answers, at, at + BIN) >= 0.8 * before:
            recovered_after = at + BIN - answering
            break
        at += BIN / 5
    statuses = Counter(status for _, status, _ in answers)
    print(
        f"before {before:.0f}/s, Redis answering at {answering:.2f}s, 80% again "
        f"{recovered_after}s after; answers {dict(statuses)}"
    )
    assert recovered_after is not None and recovered_after <= 3.0
    ok = [phone for _, status, phone in answers if status == 200]
    # Every 200 had its one SMS, and nothing answered otherwise was sent.
    assert sum(receiver.delivered.values()) == len(ok)
    assert set(receiver.delivered) == set(ok)
