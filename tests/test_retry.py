"""The retry loop on a fake clock: which failures it repeats, and when it stops."""

from __future__ import annotations

import pytest

from otpgate.delivery.retry import ProviderUnavailable, Retrier, RetryPolicy
from otpgate.domain.errors import SmsRejected, SmsUnavailable


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def retrier(t: FakeTime, jitter: float = 0.5, **policy: float) -> Retrier:
    return Retrier(RetryPolicy(**policy), clock=t.clock, sleep=t.sleep, jitter=lambda: jitter)


class Provider:
    """Fails with the given errors in turn, then answers "ok"; counts calls."""

    def __init__(self, *errors: Exception, cost: float = 0.0, t: FakeTime | None = None) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.cost = cost
        self.t = t

    async def __call__(self) -> str:
        self.calls += 1
        if self.t:
            self.t.now += self.cost
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_success_needs_no_retry() -> None:
    t = FakeTime()
    provider = Provider()
    assert await retrier(t).start().call(provider, "test") == "ok"
    assert (provider.calls, t.sleeps) == (1, [])


async def test_transient_failures_are_retried_with_growing_jittered_backoff() -> None:
    t = FakeTime()
    provider = Provider(ProviderUnavailable("a"), ProviderUnavailable("b"))
    result = await retrier(t, max_attempts=3, max_seconds=10).start().call(provider, "test")
    assert result == "ok"
    assert provider.calls == 3
    # Equal jitter with the jitter at its midpoint: 3/4 of 0.25, then 3/4 of 0.5.
    assert t.sleeps == [pytest.approx(0.1875), pytest.approx(0.375)]


@pytest.mark.parametrize("jitter", [0.0, 1.0])
async def test_jitter_stays_between_half_and_all_of_the_step(jitter: float) -> None:
    t = FakeTime()
    provider = Provider(ProviderUnavailable("a"))
    await retrier(t, jitter=jitter, base_delay=1.0).start().call(provider, "test")
    assert t.sleeps == [0.5 if jitter == 0.0 else 1.0]


async def test_gives_up_after_max_attempts_with_retry_after() -> None:
    t = FakeTime()
    provider = Provider(*[ProviderUnavailable("busy")] * 5)
    with pytest.raises(SmsUnavailable) as caught:
        await retrier(t, max_attempts=3, max_seconds=10).start().call(provider, "test")
    assert provider.calls == 3
    assert caught.value.retry_after == 1


async def test_no_attempt_starts_after_the_deadline() -> None:
    t = FakeTime()
    # Each try costs 0.4 s (a connect timeout, say); the budget is 1 s.
    provider = Provider(*[ProviderUnavailable("slow")] * 10, cost=0.4, t=t)
    start = t.now
    with pytest.raises(SmsUnavailable):
        await retrier(t, max_attempts=10, max_seconds=1.0).start().call(provider, "test")
    assert provider.calls == 2
    assert t.now - start <= 1.0 + 0.4  # the budget plus at most one try


async def test_not_retried_when_a_repeat_could_double_send() -> None:
    t = FakeTime()
    provider = Provider(ProviderUnavailable("read timeout", retry=False))
    with pytest.raises(SmsUnavailable):
        await retrier(t).start().call(provider, "test")
    assert (provider.calls, t.sleeps) == (1, [])


async def test_other_errors_pass_through_untouched() -> None:
    t = FakeTime()
    provider = Provider(SmsRejected())
    with pytest.raises(SmsRejected):
        await retrier(t).start().call(provider, "test")
    assert provider.calls == 1


async def test_provider_hint_is_honoured_or_handed_to_the_client() -> None:
    t = FakeTime()
    provider = Provider(ProviderUnavailable("429", retry_after=2.0))
    await retrier(t, max_seconds=5).start().call(provider, "test")
    assert t.sleeps == [2.0]

    t = FakeTime()
    provider = Provider(ProviderUnavailable("429", retry_after=30.0))
    with pytest.raises(SmsUnavailable) as caught:
        await retrier(t, max_seconds=5).start().call(provider, "test")
    assert provider.calls == 1
    assert caught.value.retry_after == 30


async def test_a_second_call_does_not_start_once_the_budget_is_spent() -> None:
    t = FakeTime()
    budget = retrier(t, max_seconds=1.0).start()
    slow = Provider(cost=1.5, t=t)
    assert await budget.call(slow, "check") == "ok"
    never = Provider()
    with pytest.raises(SmsUnavailable):
        await budget.call(never, "publish")
    assert never.calls == 0
