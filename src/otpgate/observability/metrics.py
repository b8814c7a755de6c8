"""Prometheus metrics: the definitions, and wrappers that time the store and the sender.

The domain knows nothing of this module: ``MeteredStore`` and ``MeteredSender``
wrap the real store and sender and are handed to the service in their place.

Label values come from small fixed sets (route templates, machine codes,
provider names, store operations, ISO country codes); never a phone number or a
code. With several worker processes, PROMETHEUS_MULTIPROC_DIR must be set before
this module is first imported (``otpgate serve`` does it), and every worker's
numbers are added up at scrape time. Requests count into tallies that are flushed
into these metrics in batches (``fast_tally``), unless that fast path is off.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

from otpgate.domain.catalog import Rendered
from otpgate.domain.errors import (
    DeliveryFailed,
    DeliveryRejected,
    DeliveryUnavailable,
    InvalidPhoneNumber,
    SmsFailed,
    SmsRejected,
    SmsUnavailable,
)
from otpgate.domain.limits import Lockout
from otpgate.domain.phone import parse_phone
from otpgate.domain.ports import (
    Attempt,
    ChannelSender,
    Issued,
    OtpStore,
    Refused,
    RequestWindow,
    SendRequest,
    SmsSender,
    Verification,
    VerificationStatus,
    WindowHit,
)
from otpgate.observability.fast_tally import Counts, Observes, counter, histogram
from otpgate.observability.request_context import note_code_found

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# The *_created series double the output for nothing a dashboard uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SLOW = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)

HTTP_REQUESTS = Counter(
    "otpgate_http_requests",
    "HTTP requests answered, by route template ('other' for unknown paths) and status.",
    ["route", "status"],
)
HTTP_DURATION = Histogram(
    "otpgate_http_request_duration_seconds",
    "Time from request received to response sent, by route template.",
    ["route"],
    buckets=_FAST,
)
OTP_SENDS = Counter(
    "otpgate_otp_sends",
    "Sends attempted, by provider (an SMS provider's name; <provider>:<channel> for the"
    " other channels), outcome (sent, rejected, unavailable, failed, error) and destination"
    " country (ISO 3166-1 alpha-2; 'email' for an address).",
    ["provider", "outcome", "country"],
)
VERIFICATIONS = Counter(
    "otpgate_verifications",
    "Verify attempts that reached a verdict: approved, wrong (a live code, another value),"
    " no_code (none live: never requested, expired or already used), max_attempts.",
    ["outcome"],
)
LIMIT_REFUSALS = Counter(
    "otpgate_limit_refusals",
    "Requests refused by a limit, by the limit's machine code.",
    ["kind"],
)
STORE_UNAVAILABLE = Counter(
    "otpgate_store_unavailable_answers",
    "Requests answered store_unavailable: the store could not be reached or did not answer"
    " in time. Without labels, so it is there (at 0) from the start.",
)
SMS_DURATION = Histogram(
    "otpgate_sms_send_duration_seconds",
    "Time the provider took to accept (or refuse) a message (every channel's, by the"
    " provider label of otpgate_otp_sends).",
    ["provider"],
    buckets=_SLOW,
)
STORE_DURATION = Histogram(
    "otpgate_store_operation_duration_seconds",
    "Time one store operation took (one round trip or transaction).",
    ["operation"],
    buckets=_FAST,
)

VERIFY_OUTCOMES = ("approved", "wrong", "no_code", "max_attempts")


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def scrape_registry() -> CollectorRegistry:
    """What a scrape reads: every worker's files in multi-process mode, else this process."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def render() -> bytes:
    """The exposition text (0.0.4 format), for a /metrics answer."""
    return generate_latest(scrape_registry())


class MeteredStore:
    """An OtpStore that times every operation; otherwise the wrapped store, unchanged.

    ``tallied``: time into per-process tallies (``fast_tally``), else the metrics.
    """

    def __init__(self, inner: OtpStore, *, tallied: bool) -> None:
        self._inner = inner

        def op(operation: str) -> Observes:
            return histogram(STORE_DURATION.labels(operation), tallied=tallied)

        self._t_issue = op("issue")
        self._t_void = op("void_issue")
        self._t_begin = op("begin_verify")
        self._t_consume = op("consume")
        self._t_get_verification = op("get_verification")
        self._t_finish_verification = op("finish_verification")
        self._t_set_channel = op("set_channel")
        self._t_hit = op("hit_window")
        self._t_ping = op("ping")

    @property
    def inner(self) -> OtpStore:
        return self._inner

    async def issue(
        self, request: SendRequest, now: float, window: RequestWindow | None = None
    ) -> Issued | Refused:
        start = time.perf_counter()
        try:
            return await self._inner.issue(request, now, window)
        finally:
            self._t_issue.observe(time.perf_counter() - start)

    async def void_issue(self, request: SendRequest, now: float) -> None:
        start = time.perf_counter()
        try:
            await self._inner.void_issue(request, now)
        finally:
            self._t_void.observe(time.perf_counter() - start)

    async def begin_verify(
        self,
        phone: str,
        ttl_seconds: int,
        now: float,
        lockout: Lockout,
        window: RequestWindow | None = None,
    ) -> Attempt:
        start = time.perf_counter()
        try:
            attempt = await self._inner.begin_verify(phone, ttl_seconds, now, lockout, window)
        finally:
            self._t_begin.observe(time.perf_counter() - start)
        note_code_found(attempt.code_hash is not None)
        return attempt

    async def consume(
        self,
        phone: str,
        code_hash: bytes,
        now: float,
        verification_id: str = "",
        ranges: Sequence[str] = (),
    ) -> bool:
        start = time.perf_counter()
        try:
            consumed = await self._inner.consume(phone, code_hash, now, verification_id, ranges)
        finally:
            self._t_consume.observe(time.perf_counter() - start)
        if not consumed:
            note_code_found(False)  # a concurrent verify used it first
        return consumed

    async def get_verification(self, verification_id: str, now: float) -> Verification | None:
        start = time.perf_counter()
        try:
            return await self._inner.get_verification(verification_id, now)
        finally:
            self._t_get_verification.observe(time.perf_counter() - start)

    async def finish_verification(
        self, verification_id: str, status: VerificationStatus, now: float
    ) -> Verification | None:
        start = time.perf_counter()
        try:
            return await self._inner.finish_verification(verification_id, status, now)
        finally:
            self._t_finish_verification.observe(time.perf_counter() - start)

    async def set_channel(self, verification_id: str, channel: str) -> None:
        start = time.perf_counter()
        try:
            await self._inner.set_channel(verification_id, channel)
        finally:
            self._t_set_channel.observe(time.perf_counter() - start)

    async def hit_window(self, window: RequestWindow, now: float) -> WindowHit:
        start = time.perf_counter()
        try:
            return await self._inner.hit_window(window, now)
        finally:
            self._t_hit.observe(time.perf_counter() - start)

    async def ping(self) -> None:
        start = time.perf_counter()
        try:
            await self._inner.ping()
        finally:
            self._t_ping.observe(time.perf_counter() - start)

    async def close(self) -> None:
        await self._inner.close()

    def __getattr__(self, name: str) -> Any:
        # Operations added to the store later still work, untimed, until listed here.
        return getattr(self._inner, name)


_SEND_OUTCOMES: tuple[tuple[type[Exception], str], ...] = (
    (SmsRejected, "rejected"),
    (SmsUnavailable, "unavailable"),
    (SmsFailed, "failed"),
)


class MeteredSender:
    """An SmsSender that times each send and counts its outcome by country.

    ``tallied``: count into per-process tallies (``fast_tally``), else the metrics.
    """

    def __init__(self, inner: SmsSender, *, tallied: bool) -> None:
        self._inner = inner
        self.name = inner.name
        self._tallied = tallied
        self._duration = histogram(SMS_DURATION.labels(inner.name), tallied=tallied)
        self._sends: dict[tuple[str, str], Counts] = {}

    @property
    def inner(self) -> SmsSender:
        return self._inner

    @property
    def problem(self) -> str | None:
        return self._inner.problem

    async def send(self, phone: str, message: str) -> str:
        outcome = "error"
        start = time.perf_counter()
        try:
            message_id = await self._inner.send(phone, message)
            outcome = "sent"
            return message_id
        except Exception as exc:
            for kind, name in _SEND_OUTCOMES:
                if isinstance(exc, kind):
                    outcome = name
                    break
            raise
        finally:
            self._duration.observe(time.perf_counter() - start)
            self._count(outcome, _country(phone))

    def _count(self, outcome: str, country: str) -> None:
        key = (outcome, country)
        child = self._sends.get(key)
        if child is None:
            child = self._sends[key] = counter(
                OTP_SENDS.labels(self.name, outcome, country), tallied=self._tallied
            )
        child.inc()

    async def close(self) -> None:
        await self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_DELIVERY_OUTCOMES: tuple[tuple[type[Exception], str], ...] = (
    (DeliveryRejected, "rejected"),
    (DeliveryUnavailable, "unavailable"),
    (DeliveryFailed, "failed"),
)


class MeteredChannelSender:
    """A ChannelSender timed and counted as ``MeteredSender`` counts SMS, under the
    provider label ``<name>:<channel>`` (``webhook:whatsapp``, ``smtp:email``)."""

    def __init__(self, inner: ChannelSender, *, tallied: bool) -> None:
        self._inner = inner
        self.name = inner.name
        self._tallied = tallied
        self._durations: dict[str, Observes] = {}
        self._sends: dict[tuple[str, str, str], Counts] = {}

    @property
    def inner(self) -> ChannelSender:
        return self._inner

    @property
    def problem(self) -> str | None:
        return self._inner.problem

    async def deliver(self, channel: str, to: str, message: Rendered) -> str:
        provider = f"{self.name}:{channel}"
        outcome = "error"
        start = time.perf_counter()
        try:
            message_id = await self._inner.deliver(channel, to, message)
            outcome = "sent"
            return message_id
        except Exception as exc:
            for kind, name in _DELIVERY_OUTCOMES:
                if isinstance(exc, kind):
                    outcome = name
                    break
            raise
        finally:
            duration = self._durations.get(provider)
            if duration is None:
                duration = self._durations[provider] = histogram(
                    SMS_DURATION.labels(provider), tallied=self._tallied
                )
            duration.observe(time.perf_counter() - start)
            country = "email" if "@" in to else _country(to)
            key = (provider, outcome, country)
            child = self._sends.get(key)
            if child is None:
                child = self._sends[key] = counter(OTP_SENDS.labels(*key), tallied=self._tallied)
            child.inc()

    async def close(self) -> None:
        await self._inner.close()


def _country(phone: str) -> str:
    """ISO region of an E.164 number, or 'unknown'; never the number itself.

    "valid" first: under the default PHONE_NUMBER_CHECK the request just parsed the
    number that way, so it is a cache hit instead of a second full parse.
    """
    for check in ("valid", "possible"):
        try:
            return parse_phone(phone, check).region or "unknown"
        except InvalidPhoneNumber:
            continue
    return "unknown"
