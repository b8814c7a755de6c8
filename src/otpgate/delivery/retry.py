"""Bounded retries for provider calls that failed in a way another try may fix.

Only failures where the provider did not take the message are retried by
default: throttling, 5xx answers, and connections that never opened. Whether a
read timeout is retried is the sender's call (see ``ProviderUnavailable.retry``):
SNS Publish has no idempotency key, so a retry after a timeout could send a
second SMS; the webhook carries one, so it can.

The budget is ``max_attempts`` tries per provider call and ``max_seconds`` for
the whole send: no attempt starts after the deadline. The worst case for one
send is therefore ``max_seconds`` plus one attempt's connect and read timeouts.
Clients' own retries (botocore's) are switched off so this is the only loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from otpgate.domain.errors import SmsUnavailable
from otpgate.observability.outage import OutageLog

# The logger name log lines carry, as before the module moved.
log = logging.getLogger("otpgate.sms.retry")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    max_seconds: float = 3.0
    base_delay: float = 0.25
    max_delay: float = 2.0

    def backoff(self, attempt: int) -> float:
        """The exponential step after ``attempt`` (1-based), before jitter."""
        return float(min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


class ProviderUnavailable(Exception):
    """One attempt failed because the provider is busy or unreachable.

    ``retry`` is False when another attempt could deliver the SMS twice;
    ``retry_after`` is the provider's own hint in seconds, if it gave one.
    Never leaves the sender: the retry loop turns it into ``SmsUnavailable``.
    """

    def __init__(self, reason: str, *, retry_after: float | None = None, retry: bool = True):
        self.reason = reason
        self.retry_after = retry_after
        self.retry = retry
        super().__init__(reason)


class Retrier:
    def __init__(
        self,
        policy: RetryPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        name: str = "SMS provider",
    ) -> None:
        self.policy = policy
        self.outage = OutageLog(log, name)
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter

    def start(self) -> SendBudget:
        """One budget per send; every provider call of that send draws on it."""
        return SendBudget(self, self.now() + self.policy.max_seconds)

    def now(self) -> float:
        return self._clock()

    def delay(self, attempt: int, hint: float | None) -> float:
        """How long to wait after failed ``attempt`` (1-based), never less than ``hint``."""
        # "Equal jitter": at least half the step, so throttled callers really back off,
        # and spread over the other half so they do not come back in lockstep.
        step = self.policy.backoff(attempt)
        delay = step / 2 + self._jitter() * step / 2
        return max(delay, hint) if hint is not None else delay

    async def sleep(self, seconds: float) -> None:
        await self._sleep(seconds)


class SendBudget:
    """The attempts and the deadline of one send."""

    def __init__(self, retrier: Retrier, deadline: float) -> None:
        self._r = retrier
        self.deadline = deadline
        self.attempts = 0  # across every call of this send

    async def call(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        """Run ``attempt`` until it succeeds, raises anything else, or the budget runs out."""
        r = self._r
        if self.attempts and r.now() >= self.deadline:
            # An earlier call of this send used the whole budget: do not start another.
            r.outage.failed(f"{what}: not attempted, the send's time budget is spent")
            raise SmsUnavailable(retry_after=_client_retry_after(r.policy.base_delay))
        tries = 0
        while True:
            tries += 1
            self.attempts += 1
            try:
                result = await attempt()
            except ProviderUnavailable as exc:
                delay = r.delay(tries, exc.retry_after)
                if (
                    not exc.retry
                    or tries >= r.policy.max_attempts
                    or r.now() + delay >= self.deadline
                ):
                    r.outage.failed(f"{what}: {exc.reason} ({tries} attempt(s))")
                    raise SmsUnavailable(retry_after=_client_retry_after(delay)) from exc
                log.debug(
                    "%s: attempt %d failed (%s), retrying in %.2fs", what, tries, exc.reason, delay
                )
                await r.sleep(delay)
            else:
                r.outage.ok()
                return result


def _client_retry_after(delay: float) -> int:
    """What the client is told to wait, in whole seconds: the next backoff step or the
    provider's own hint, at least 1."""
    return min(3600, max(1, math.ceil(delay)))
