"""The send limits hold in every span of their window, on every store.

Properties (Hypothesis), against a model that knows only the accepted sends' times:

- a per-phone limit of N per window W (an exact sliding log): the accepted sends
  never put more than N into any span of W; a send is refused exactly when N
  accepted sends are newer than ``now - W``, with Retry-After the exact wait
  rounded up; and when refused with Retry-After r, a send at now + r fits while
  one at now + r - 1 s does not;
- a budget in sub-windows (a tenth of the window each): never more than the limit
  in any span of W; a send is refused only when the span it counts, at most
  W + W/10, already holds the limit; Retry-After r is again where a send first
  fits (now + r - 1 s is still refused).

Send times are whole milliseconds on an injected clock a day ahead of the real one
(Redis forgets keys by its own clock), with bursts, jumps to just before or after a
window's or sub-window's edge, and long gaps. No cooldown, so the quota alone
decides. Each example has a scope of its own, so one store serves a whole run.

Then the sequence an outside tester measured against the old weighted windows,
through the service on every store.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otpgate.domain.codes import CodeHasher
from otpgate.domain.errors import LimitExceeded
from otpgate.domain.limits import AbusePolicy, PumpingGuard, Quota
from otpgate.domain.policy import OtpPolicy
from otpgate.domain.ports import Issued, OtpStore, Refused, SendRequest
from otpgate.domain.service import OtpService
from otpgate.store.redis.store import RedisStore
from otpgate.store.reference import MemoryStore
from otpgate.store.sqlite import SqliteStore
from tests.fakes import CapturingSender, RecordingSigner

DAY_MS = 86_400_000
SUB_WINDOWS = 10


@contextmanager
def opened(make: Callable[[], OtpStore]) -> Iterator[tuple[asyncio.Runner, OtpStore]]:
    with asyncio.Runner() as runner:
        store = make()
        try:
            yield runner, store
        finally:
            runner.run(store.close())


def local_store(backend: str, tmp_path: Path) -> Callable[[], OtpStore]:
    if backend == "sqlite":
        return lambda: SqliteStore(tmp_path / "otpgate.sqlite3")
    return MemoryStore


# -- the scenarios ------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    move: str  # "gap": wait `ms`; "edge" / "sub-edge": to the next window / sub-window
    ms: int  # edge, `ms` off it (not back in time)
    follow_retry: bool  # when refused: try at now + r - 1 s, then at now + r


@dataclass(frozen=True)
class Scenario:
    limit: int
    window_s: int
    lead_ms: int  # the first send this long before a window's edge
    steps: tuple[Step, ...]

    @property
    def window_ms(self) -> int:
        return self.window_s * 1000


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    window_s = draw(st.sampled_from((10, 45, 60, 600)))
    window_ms = window_s * 1000
    moves = st.one_of(
        st.tuples(st.just("gap"), st.integers(0, 50)),  # a burst
        st.tuples(st.just("gap"), st.integers(0, 3_000)),
        st.tuples(st.just("gap"), st.integers(0, window_ms)),
        st.tuples(st.just("edge"), st.integers(-2_000, 2_000)),
        st.tuples(st.just("sub-edge"), st.integers(-500, 500)),
    )
    steps = draw(
        st.lists(
            st.builds(lambda m, follow: Step(m[0], m[1], follow), moves, st.booleans()),
            min_size=1,
            max_size=40,
        )
    )
    return Scenario(
        limit=draw(st.integers(1, 5)),
        window_s=window_s,
        lead_ms=draw(st.integers(0, window_ms)),
        steps=tuple(steps),
    )


def next_at(t: int, step: Step, window_ms: int) -> int:
    if step.move == "gap":
        return t + step.ms
    span = window_ms if step.move == "edge" else window_ms // SUB_WINDOWS
    return max(t, (t // span + 1) * span + step.ms)


# -- the model: only the accepted sends' times ----------------------------------------------


def within(accepted: list[int], after: int, until: int) -> list[int]:
    """The accepted sends in ``(after, until]``."""
    return [a for a in accepted if after < a <= until]


def assert_no_span_over(accepted: list[int], limit: int, window_ms: int) -> None:
    """No span of ``window_ms`` (times less than a window apart) holds more than ``limit``."""
    ordered = sorted(accepted)
    for i in range(len(ordered) - limit):
        first, past = ordered[i], ordered[i + limit]
        assert past - first >= window_ms, (
            f"{limit + 1} sends within {past - first} ms of a {window_ms} ms window: {ordered}"
        )


def ceil_s(ms: int) -> int:
    return max(1, -(-ms // 1000))


# -- the driver -------------------------------------------------------------------------------


@dataclass
class Run:
    """One scenario against one store, with its own scope."""

    runner: asyncio.Runner
    store: OtpStore
    quota: Quota
    phone: str
    accepted: list[int]
    refusals: int = 0
    followed: int = 0

    def send(self, t: int) -> Issued | Refused:
        request = SendRequest(
            phone=self.phone,
            code_hash=uuid.uuid4().bytes * 2,
            ttl_seconds=3600,
            cooldown_seconds=0,
            quotas=(self.quota,),
            send_id=uuid.uuid4().hex,
        )
        outcome = self.runner.run(self.store.issue(request, t / 1000))
        if isinstance(outcome, Issued):
            self.accepted.append(t)
        else:
            assert outcome.kind == self.quota.kind
            self.refusals += 1
        return outcome


def drive(
    runner: asyncio.Runner,
    store: OtpStore,
    sc: Scenario,
    buckets: int,
    check_refusal: Callable[[Run, int, int], None],
) -> Run:
    scope = uuid.uuid4().hex[:12]
    phone = f"+1212{int(scope, 16) % 10**7:07d}"
    kind, key = ("phone_send_limit", phone) if not buckets else ("global_budget", f"g:{scope}")
    run = Run(runner, store, Quota(kind, key, sc.limit, sc.window_s, buckets), phone, [])
    real_ms = round(time.time() * 1000)
    t = ((real_ms + DAY_MS) // sc.window_ms + 1) * sc.window_ms - sc.lead_ms
    for step in sc.steps:
        t = next_at(t, step, sc.window_ms)
        outcome = run.send(t)
        if isinstance(outcome, Issued):
            continue
        r = outcome.retry_after
        check_refusal(run, t, r)
        if step.follow_retry:
            run.followed += 1
            if r > 1:
                early = run.send(t + (r - 1) * 1000)
                assert isinstance(early, Refused), f"fit at now + {r - 1} s, told {r} s"
                check_refusal(run, t + (r - 1) * 1000, early.retry_after)
            t += r * 1000
            assert isinstance(run.send(t), Issued), f"refused at now + Retry-After ({r} s)"
    assert_no_span_over(run.accepted, sc.limit, sc.window_ms)
    return run


def exact_log_refusal(run: Run, t: int, r: int) -> None:
    """Refused exactly when ``limit`` accepted sends are newer than ``t - window``, told
    to come back when the oldest of them that must leave has left."""
    q = run.quota
    live = within(run.accepted, t - q.window_ms, t)
    assert len(live) >= q.limit, f"refused with {len(live)} of {q.limit} in the window"
    assert r == ceil_s(live[len(live) - q.limit] + q.window_ms - t)


def sub_window_refusal(run: Run, t: int, r: int) -> None:
    """Refused only when the counted span, at most a window and a sub-window long,
    holds the limit; Retry-After at most that span."""
    q = run.quota
    width = q.window_ms // q.buckets
    counted = within(run.accepted, t - q.window_ms - width, t)
    assert len(counted) >= q.limit, f"refused with {len(counted)} of {q.limit} counted"
    assert r <= ceil_s(q.window_ms + width)


def check_every_decision_of_the_log(run: Run, sc: Scenario) -> None:
    """Replays the accepted times: each was accepted with fewer than ``limit`` before it
    in its window (together with the refusal check, the log decides exactly)."""
    for i, t in enumerate(run.accepted):
        before = within(run.accepted[:i], t - sc.window_ms, t)
        assert len(before) < sc.limit, f"accepted at {t} with {before} in the window"


@dataclass
class Tally:
    examples: int = 0
    sends: int = 0
    refusals: int = 0
    followed: int = 0
    started: float = 0.0

    def add(self, run: Run) -> None:
        self.examples += 1
        self.sends += len(run.accepted) + run.refusals
        self.refusals += run.refusals
        self.followed += run.followed

    def report(self, name: str, record: Callable[[str, object], None]) -> None:
        summary = (
            f"{name}: {self.examples} examples, {self.sends} sends, {self.refusals} refused,"
            f" {self.followed} Retry-After followed, in {time.monotonic() - self.started:.1f} s"
        )
        print(summary)  # shown with -s or -rP
        record("send_windows", summary)
        assert self.refusals and self.followed, summary


PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def check_phone_limit(
    make: Callable[[], OtpStore], name: str, record: Callable[[str, object], None]
) -> None:
    tally = Tally(started=time.monotonic())
    with opened(make) as (runner, store):

        @PROPERTY_SETTINGS
        @given(scenarios())
        def holds(sc: Scenario) -> None:
            run = drive(runner, store, sc, 0, exact_log_refusal)
            check_every_decision_of_the_log(run, sc)
            tally.add(run)

        holds()
    tally.report(name, record)


def check_budget(
    make: Callable[[], OtpStore], name: str, record: Callable[[str, object], None]
) -> None:
    tally = Tally(started=time.monotonic())
    with opened(make) as (runner, store):

        @PROPERTY_SETTINGS
        @given(scenarios())
        def holds(sc: Scenario) -> None:
            tally.add(drive(runner, store, sc, SUB_WINDOWS, sub_window_refusal))

        holds()
    tally.report(name, record)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_phone_limit_holds_in_every_span(
    backend: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    check_phone_limit(local_store(backend, tmp_path), f"phone limit, {backend}", record_property)


def test_phone_limit_holds_in_every_span_on_redis(
    redis_url: str, redis_prefix: str, record_property: Callable[[str, object], None]
) -> None:
    check_phone_limit(
        lambda: RedisStore(redis_url, prefix=redis_prefix, phone_state_seconds=3600),
        "phone limit, redis",
        record_property,
    )


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_budget_holds_in_every_span(
    backend: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    check_budget(local_store(backend, tmp_path), f"budget, {backend}", record_property)


def test_budget_holds_in_every_span_on_redis(
    redis_url: str, redis_prefix: str, record_property: Callable[[str, object], None]
) -> None:
    check_budget(
        lambda: RedisStore(redis_url, prefix=redis_prefix, phone_state_seconds=3600),
        "budget, redis",
        record_property,
    )


# -- the tester's sequence ------------------------------------------------------------------

# Limit 3 per 60 s, cooldown 1 s; sends at these seconds around a window's edge. The
# weighted fixed windows accepted all six: the first five within 44.5 s, and then
# +60.5. Now the log holds -4.0, -2.8 and -1.6 until 60 s after each: +20.5 waits
# until +56.0 (36 s, rounded up), +40.5 until +56.0 (16 s); at +60.5 all three are
# more than 60 s old (64.5, 63.3 and 62.1 s), so the sixth goes out, and the span
# from -4.0 to +56.0 never held more than three.
TESTER_OFFSETS = (-4.0, -2.8, -1.6, 20.5, 40.5, 60.5)
TESTER_EXPECTED: list[object] = [
    "sent",
    "sent",
    "sent",
    ("phone_send_limit", 36),
    ("phone_send_limit", 16),
    "sent",
]
TESTER_PHONE = "+12125550150"


async def send_the_testers_sequence(store: OtpStore) -> list[object]:
    """The sends through the service, with the tester's settings and an injected clock."""
    edge = ((time.time() + 86_400) // 60 + 1) * 60  # a window's edge, a day ahead
    now = [edge]
    limits = AbusePolicy(
        resend_cooldown_seconds=1,
        phone_sends=3,
        phone_window_seconds=60,
        pumping=PumpingGuard(enabled=False),
    )
    sender = CapturingSender()
    service = OtpService(
        store,
        sender,
        CodeHasher(b"k" * 32),
        OtpPolicy(),
        limits,
        RecordingSigner(),
        clock=lambda: now[0],
    )
    outcomes: list[object] = []
    for offset in TESTER_OFFSETS:
        now[0] = edge + offset
        try:
            await service.request_code(TESTER_PHONE, "198.51.100.9")
            outcomes.append("sent")
        except LimitExceeded as exc:
            outcomes.append((exc.code, exc.retry_after))
    assert len(sender.sent) == outcomes.count("sent")
    return outcomes


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_the_testers_sequence_is_refused(backend: str, tmp_path: Path) -> None:
    store = local_store(backend, tmp_path)()
    try:
        assert await send_the_testers_sequence(store) == TESTER_EXPECTED
    finally:
        await store.close()


async def test_the_testers_sequence_is_refused_on_redis(redis_url: str, redis_prefix: str) -> None:
    store = RedisStore(redis_url, prefix=redis_prefix, phone_state_seconds=3600)
    try:
        assert await send_the_testers_sequence(store) == TESTER_EXPECTED
    finally:
        await store.close()
