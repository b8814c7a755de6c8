"""A send answered with an error is never charged, whatever happens to the process after.

Real processes: ``otpgate serve`` with two workers, SMS through a webhook receiver that
counts what it delivers, and a private ``redis-server`` that the tests pause
(SIGSTOP) and resume. Each scenario runs several times over, with a new phone each
time, so that a failure one time in a few shows.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.http_stub import HANG, Received, Reply, StubServer
from tests.redis_server import PrivateRedis
from tests.service_process import ServiceProcess

ROUNDS = 3


class Receiver:
    """The SMS provider: counts each message it accepts, per phone; a phone put in
    ``hang`` has its next message held unanswered and counted as nothing."""

    def __init__(self) -> None:
        self.stub = StubServer()
        self.delivered: Counter[str] = Counter()
        self.hang: set[str] = set()
        self.held: list[Received] = []
        self._lock = threading.Lock()
        self.stub.respond = self._respond

    def _respond(self, received: Received) -> Reply | object:
        phone = orjson.loads(received.body)["phoneNumber"]
        with self._lock:
            if phone in self.hang:
                self.hang.discard(phone)
                self.held.append(received)
                return HANG
            self.delivered[phone] += 1
        return Reply(202, orjson.dumps({"messageId": f"m-{phone}"}))

    def env(self) -> dict[str, str]:
        return {
            "SMS_PROVIDER": "webhook",
            "SMS_WEBHOOK_URL": f"{self.stub.url}/sms",
            "SMS_WEBHOOK_SECRET": "w" * 40,
            "SMS_READ_TIMEOUT_SECONDS": "10",  # a held call is still in flight when killed
            "OTP_RESEND_COOLDOWN_SECONDS": "60",
            "ALLOWED_COUNTRIES": "US",
            # The retries below come from one address, several a second.
            "RATE_LIMIT_MAX_REQUESTS": "1000",
        }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.stub.start()
    try:
        yield r
    finally:
        r.stub.stop()


def until(condition: Callable[[], bool], timeout: float, what: str | Callable[[], str]) -> float:
    """Seconds until ``condition`` holds, polled; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout}s: {what if isinstance(what, str) else what()}")
        time.sleep(0.05)
    return time.monotonic() - started


def request_otp(service: ServiceProcess, phone: str) -> httpx.Response:
    return service.post("/api/v1/request-otp", {"phoneNumber": phone})


def pid_of_connection(local_port: int, pids: list[int]) -> int:
    """Which of ``pids`` owns the TCP connection whose local port is ``local_port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == local_port:
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
            except FileNotFoundError:
                continue
    raise AssertionError(f"no worker holds the connection from port {local_port}")


def group(service: ServiceProcess) -> list[int]:
    """Every live process of the service (its own session and process group): the
    supervisor and its workers, whether or not a worker has said it is ready yet."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == service.proc.pid and fields[0] != "Z":  # pgid; not a zombie
                pids.append(int(entry))
    return pids


@pytest.fixture(params=["sqlite", "redis"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {}
        return
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    try:
        yield {"REDIS_URL": server.url}
    finally:
        server.stop()


def test_a_worker_killed_while_its_provider_call_is_in_flight_leaves_no_charge(
    tmp_path: Path, receiver: Receiver, store_env: dict[str, str]
) -> None:
    """The receiver holds the call and counts nothing for it; the worker making it is
    SIGKILLed. Within 10 s the same phone gets 200 and exactly one SMS: the send that
    never went out was voided by another worker, from the dead one's journal."""
    service = ServiceProcess(tmp_path, workers=2, **receiver.env(), **store_env)
    try:
        service.wait_ready()
        until(lambda: len(service.ready_workers()) == 2, 20, "both workers serving")
        for round_ in range(ROUNDS):
            took, statuses = _kill_mid_send(service, receiver, f"+1212555{round_:04d}")
            print(f"round {round_}: 200 {took:.2f}s after the kill, answers {statuses}")
        assert sum(receiver.delivered.values()) == ROUNDS
    finally:
        out = service.stop()
    assert "Traceback" not in out, out


def _kill_mid_send(
    service: ServiceProcess, receiver: Receiver, phone: str
) -> tuple[float, list[int]]:
    held = len(receiver.held)
    receiver.hang.add(phone)
    answers: list[object] = []
    first = threading.Thread(target=lambda: answers.append(_answer(service, phone)))
    first.start()
    until(lambda: len(receiver.held) == held + 1, 10, "the provider call held")
    os.kill(pid_of_connection(receiver.held[-1].peer[1], group(service)), signal.SIGKILL)
    first.join(timeout=15)
    assert answers and answers[0] != 200, answers  # no answer, or an error

    killed_at = time.monotonic()
    statuses: list[int] = []

    def retried() -> bool:
        statuses.append(request_otp(service, phone).status_code)
        return statuses[-1] == 200

    until(retried, 10, lambda: f"a 200 for {phone} after its worker died: {statuses}")
    took = time.monotonic() - killed_at
    until(lambda: receiver.delivered[phone] == 1, 5, "its one SMS")
    assert set(statuses) <= {200, 429, 503}, statuses
    return took, statuses


def _answer(service: ServiceProcess, phone: str) -> object:
    try:
        return request_otp(service, phone).status_code
    except httpx.TransportError as exc:
        return type(exc).__name__


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_send_stalled_on_redis_is_not_charged_after_a_restart(
    tmp_path: Path, receiver: Receiver, how: str
) -> None:
    """Redis paused: request-otp answers 503. The service is stopped (SIGTERM to it, or
    SIGKILL to its whole process group) before Redis resumes and runs the queued step.
    Started again, the service answers the same phone 200 at once, with one SMS."""
    redis = PrivateRedis(tmp_path / "redis")
    redis.start()
    env = {**receiver.env(), "REDIS_URL": redis.url, "REDIS_TIMEOUT_SECONDS": "0.5"}
    try:
        for round_ in range(ROUNDS):
            _stall_then_restart(tmp_path, redis, receiver, env, how, f"+1212555{round_:04d}")
        for n in range(ROUNDS):
            assert receiver.delivered[f"+1212555{n:04d}"] == 1
    finally:
        redis.stop()


def _stall_then_restart(
    tmp_path: Path,
    redis: PrivateRedis,
    receiver: Receiver,
    env: dict[str, str],
    how: str,
    phone: str,
) -> None:
    service = ServiceProcess(tmp_path, workers=2, **env)
    try:
        service.wait_ready()
        # A send first, so that Redis holds the scripts: the stalled step will run as
        # it is, not be refused for a script it does not know.
        assert request_otp(service, phone.replace("+1212", "+1646")).status_code == 200
        redis.pause()
        stalled = request_otp(service, phone)
        assert stalled.status_code == 503, stalled.text
        assert stalled.json()["code"] == "store_unavailable"
        if how == "SIGTERM":
            service.proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(service.proc.pid, signal.SIGKILL)
        service.proc.wait(timeout=30)
    finally:
        redis.resume()
        out = service.stop()
    assert "Traceback" not in out, out
    # The step the dead service gave up on runs now, with no SMS out.
    with redis.client() as client:
        until(lambda: client.dbsize() > 0, 5, "the queued step run")

    again = ServiceProcess(tmp_path, workers=2, **env)
    try:
        again.wait_ready()
        answered = request_otp(again, phone)
        assert answered.status_code == 200, answered.text
        until(lambda: receiver.delivered[phone] == 1, 5, "its one SMS")
    finally:
        out = again.stop()
    assert "Traceback" not in out, out
    assert "voiding 1 sends left unsettled" in out, out
