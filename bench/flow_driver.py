"""Load for the full flow: request a code, read it back from the SNS stub, verify it.

wrk cannot do this (a script cannot ask another server for the code), so this
is a small asyncio client instead: raw HTTP/1.1 over keep-alive streams on
uvloop, one coroutine per connection, each using fresh numbers in turn. It is
bounded by ``--duration`` and ``--max-flows`` and prints one ``BENCH_RESULT``
line like the wrk scripts (latency and req/s are per request to the service:
two per flow).

Run: ``python -m bench.flow_driver --url http://127.0.0.1:3000 --stub http://127.0.0.1:5055``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

from bench import phones

# Sent with every API call when set (the services' key check is then measured too).
API_KEY = os.environ.get("BENCH_API_KEY", "")


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; just enough protocol for JSON and text."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            if API_KEY:
                head += f"Authorization: Bearer {API_KEY}\r\n"
        try:
            self._writer.write(head.encode() + b"\r\n" + body)
            raw = await self._reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (ln.partition(":") for ln in lines[1:])
            )
            if "content-length" not in headers:
                raise ConnectionError(f"{method} {path}: reply without Content-Length")
            payload = await self._reader.readexactly(int(headers["content-length"]))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, payload

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # every service request, seconds
    by_kind: dict[str, list[float]] = field(
        default_factory=lambda: {"request": [], "verify": [], "flow": []}
    )
    socket_errors: int = 0
    code_misses: int = 0  # the stub had no code for a number the service said it sent to
    flows_ok: int = 0

    def record(self, kind: str, status: int, seconds: float) -> None:
        self.statuses[status] += 1
        self.latencies.append(seconds)
        self.by_kind[kind].append(seconds)


async def _one_connection(
    service: tuple[str, int],
    stub: tuple[str, int],
    next_phone: list[int],
    deadline: float,
    max_flows: int,
    tally: Tally,
) -> None:
    svc = HttpConnection(*service)
    codes = HttpConnection(*stub)
    clock = time.perf_counter
    try:
        while clock() < deadline and next_phone[0] < max_flows:
            phone = phones.phone_at(next_phone[1] + next_phone[0])
            next_phone[0] += 1
            try:
                t0 = clock()
                status, _ = await svc.request(
                    "POST", "/api/v1/request-otp", b'{"phoneNumber":"%s"}' % phone.encode()
                )
                t1 = clock()
                tally.record("request", status, t1 - t0)
                if status != 200:
                    continue
                found, code = await codes.request("GET", "/codes/%2B" + phone[1:])
                if found != 200:
                    tally.code_misses += 1
                    continue
                t2 = clock()
                status, _ = await svc.request(
                    "POST",
                    "/api/v1/verify-otp",
                    b'{"phoneNumber":"%s","otp":"%s"}' % (phone.encode(), code),
                )
                t3 = clock()
                tally.record("verify", status, t3 - t2)
                if status == 200:
                    tally.flows_ok += 1
                    tally.by_kind["flow"].append(t3 - t0)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                tally.socket_errors += 1
                await asyncio.sleep(0.01)  # do not spin on a dead server
    finally:
        svc.close()
        codes.close()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000


async def drive(
    url: str, stub_url: str, duration: float, connections: int, max_flows: int
) -> dict[str, object]:
    service = urlsplit(url)
    stub = urlsplit(stub_url)
    tally = Tally()
    # A random start in the 80-million space: numbers are fresh for every run.
    next_phone = [0, random.randrange(phones.SPACE)]
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(
        *(
            _one_connection(
                (service.hostname or "127.0.0.1", service.port or 80),
                (stub.hostname or "127.0.0.1", stub.port or 80),
                next_phone,
                deadline,
                max_flows,
                tally,
            )
            for _ in range(connections)
        )
    )
    seconds = time.perf_counter() - started
    requests = len(tally.latencies)
    return {
        "requests": requests,
        "seconds": round(seconds, 3),
        "rps": round(requests / seconds, 1),
        "flows_ok": tally.flows_ok,
        "flows_per_s": round(tally.flows_ok / seconds, 1),
        "p50_ms": _pct(tally.latencies, 50),
        "p90_ms": _pct(tally.latencies, 90),
        "p99_ms": _pct(tally.latencies, 99),
        "max_ms": _pct(tally.latencies, 100),
        "by_kind_ms": {
            kind: {"p50": _pct(v, 50), "p99": _pct(v, 99)} for kind, v in tally.by_kind.items()
        },
        "non_2xx_3xx": sum(n for s, n in tally.statuses.items() if not 200 <= s < 400),
        "socket_errors": {"any": tally.socket_errors},
        "code_misses": tally.code_misses,
        "statuses": {str(s): n for s, n in sorted(tally.statuses.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="request -> code -> verify load")
    parser.add_argument("--url", required=True, help="service base URL")
    parser.add_argument("--stub", required=True, help="SNS stub base URL")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (bounded)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--max-flows", type=int, default=5_000_000)
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(drive(args.url, args.stub, args.duration, args.connections, args.max_flows))
    print("BENCH_RESULT " + orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
