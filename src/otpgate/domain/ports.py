"""The ports the use cases talk through, and the values they trade in.

The domain owns these; ``otpgate.store``, ``otpgate.delivery`` and ``otpgate.tokens``
implement them and import from here, never the reverse. Each store method is one atomic step on
the backend (a Lua script on Redis, one transaction on SQLite, one critical
section in memory), so a limit holds across every worker and instance that
shares the store, and a request pays for one round trip per step.

The store knows counters, sets and clocks, not policy: the domain decides which
limits apply to a request (``otpgate.domain.limits``) and hands them over here.

A sender raises ``SmsRejected`` (the number is the problem), ``SmsOptedOut``
(the subscriber said STOP), ``SmsUnavailable`` (try again later) or ``SmsFailed``
(our side is broken); anything else it lets escape is a bug. It logs the cause
of a failure itself, never the message text (it carries the code). A sender of
another channel (``ChannelSender``) raises the same three outcomes as
``DeliveryRejected``, ``DeliveryUnavailable`` and ``DeliveryFailed``, of which the
SMS errors are the SMS cases.

A recipient is keyed by one string everywhere below (``phone`` in the names, which
predate email): an E.164 number, or an email address in canonical form
(``otpgate.domain.recipient``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from otpgate.domain.catalog import Rendered
from otpgate.domain.limits import (
    DAY_BUCKETS_KEPT,
    HOUR,
    ConversionGuard,
    DistinctQuota,
    Lockout,
    Quota,
    SurgeGuard,
)
from otpgate.domain.windows import RequestWindow as RequestWindow  # noqa: PLC0414 (re-exported)
from otpgate.domain.windows import WindowHit as WindowHit  # noqa: PLC0414 (re-exported)


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Everything the issue step needs to decide and record a send atomically.

    ``send_id`` is unique per send (the service draws ``uuid4().hex``): it names this
    send's entry in a sliding log and the code it stores, so a void removes exactly
    this send's charges and never another send's at the same instant.
    """

    phone: str
    code_hash: bytes
    ttl_seconds: int
    cooldown_seconds: int
    quotas: Sequence[Quota] = ()
    distinct: Sequence[DistinctQuota] = ()
    surges: Sequence[SurgeGuard] = ()
    send_id: str = field(kw_only=True)
    # The verification this send opens ("" opens none), kept ``retention_seconds``
    # past the code's expiry so its status stays answerable.
    verification_id: str = field(default="", kw_only=True)
    purpose: str | None = field(default=None, kw_only=True)
    channel: str = field(default="sms", kw_only=True)
    retention_seconds: int = field(default=0, kw_only=True)
    # What the caller keeps with the verification (opaque, at most DETAILS_MAX chars).
    details: str | None = field(default=None, kw_only=True)
    # Continue the phone's pending verification instead of opening ``verification_id``,
    # when its purpose, channel and details are this send's: a resend keeps its id.
    resume: bool = field(default=False, kw_only=True)
    # The ranges (``prefix:…``, ``country:…``) whose sends this one counts in, and
    # whose conversion guards it passes (``limits.AbusePolicy.ranges``).
    ranges: Sequence[str] = field(default=(), kw_only=True)
    conversions: Sequence[ConversionGuard] = field(default=(), kw_only=True)
    # Override entries covering the phone (``limits.override_candidates``): one on the
    # deny list refuses the send; one on the exempt list skips every surge and
    # conversion guard, and any block they set.
    overrides: Sequence[str] = field(default=(), kw_only=True)

    @property
    def reach_seconds(self) -> int:
        """How long after the send anything it charges can still count: a voided
        send's id is remembered that long, so an issue step that runs late finds it."""
        return max(
            self.ttl_seconds + self.retention_seconds,
            self.cooldown_seconds,
            *(q.window_seconds for q in self.quotas),
            *(d.window_seconds for d in self.distinct),
            # A surge window's count is the baseline through the next window too.
            *(2 * g.window_seconds for g in self.surges),
            DAY_BUCKETS_KEPT * HOUR if self.ranges else 0,
        )


@dataclass(frozen=True, slots=True)
class Issued:
    """A stored code: the send was charged at ``now``."""

    request: SendRequest
    now: float
    window_hit: WindowHit | None = None
    # The verification the code belongs to: the request's own, or the one it resumed.
    verification_id: str = ""


@dataclass(frozen=True, slots=True)
class Refused:
    """Nothing was stored or charged; ``kind`` names the limit that refused."""

    kind: str
    retry_after: int
    window_hit: WindowHit | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """The result of counting one verify attempt for a phone.

    ``attempts`` already includes this one; ``code_hash`` is None when no live
    code exists (never requested, expired or consumed). ``locked_for`` > 0 means
    the lockout refused the attempt and nothing was counted.
    """

    attempts: int
    code_hash: bytes | None
    locked_for: int = field(default=0)
    window_hit: WindowHit | None = None
    verification_id: str = ""  # the live code's verification ("" for none)


# The longest ``details`` a store keeps, and how many send times a verification keeps.
DETAILS_MAX = 512
SENDS_KEPT = 10

VerificationStatus = Literal[
    "pending", "approved", "canceled", "expired", "max_attempts_reached", "failed"
]


@dataclass(frozen=True, slots=True)
class Verification:
    """What a send opened, as the app may ask about it later. Never a code or a hash.

    ``status`` as stored may be ``pending`` after the fact; the store answers it as
    ``expired`` once the code's time is up, and ``canceled`` once a newer send
    replaced its code (``current``).
    """

    id: str
    phone: str
    status: VerificationStatus
    channel: str
    purpose: str | None
    created_at: float
    updated_at: float
    expires_at: float  # the code's
    details: str | None = None
    # When each send of this verification went out, oldest first (the last SENDS_KEPT).
    send_times: tuple[float, ...] = ()

    def seen_at(self, now: float, current: bool) -> Verification:
        """The record as of ``now``: a pending one whose code is gone is not pending."""
        if self.status != "pending":
            return self
        if now >= self.expires_at:
            return replace(self, status="expired", updated_at=self.expires_at)
        if not current:
            return replace(self, status="canceled")
        return self


@dataclass(frozen=True, slots=True)
class Block:
    """A defence that stops sends to a range (``prefix_blocked``, ``country_blocked``) or
    verifies for a phone (``phone_locked``) until ``ends_at``.

    ``reason`` says which rule set it (``surge``, ``conversion``, ``failures``) and
    ``counts`` what it saw: sends and the previous window's (a surge), sends and
    approvals (a conversion), consecutive failures (a lockout).
    """

    kind: str
    scope: str  # prefix:<digits>, country:<XX>, or the phone in E.164
    reason: str
    started_at: float
    ends_at: float
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PhoneState:
    """What the defences hold about one phone; never its code or the code's hash."""

    phone: str
    code_pending: bool
    code_expires_at: float | None
    attempts: int  # on the pending code
    cooldown_until: float | None
    sends_in_window: int  # counted by the per-phone send limit
    failures: int  # consecutive failed verifies
    last_failure_at: float | None
    verification: Verification | None  # the pending code's


@dataclass(frozen=True, slots=True)
class RangeStats:
    """Sends and approvals of a range over the last hour and the last day."""

    scope: str
    hour_sends: int
    hour_approvals: int
    day_sends: int
    day_approvals: int


OverrideList = Literal["exempt", "deny"]


class OtpStore(Protocol):
    async def issue(
        self, request: SendRequest, now: float, window: RequestWindow | None = None
    ) -> Issued | Refused:
        """Check every limit; if all pass, replace the phone's code and charge them.

        ``window`` is always counted first; over it, the answer is ``Refused``
        of kind ``rate_limited`` and nothing else happens. Then checks run in a
        fixed order (surge blocks, cooldown, quotas, distinct quotas, surge
        rules) and the first refusal wins; a refusal charges nothing.
        """

    async def void_issue(self, request: SendRequest, now: float) -> None:
        """Make the send issued (or being issued) at ``now`` as if it never happened.

        If its issue step has run and its code is still the phone's, the code goes
        and every charge is refunded; a newer send's code and charges stay. If there
        is nothing of it to refund, the step may not have run yet (it timed out on
        its way to a stalled backend), and it never will: the id is remembered for
        ``request.reach_seconds``, and an issue of a voided send charges nothing and
        raises ``StoreUnavailable``. Idempotent.
        """

    async def begin_verify(
        self,
        phone: str,
        ttl_seconds: int,
        now: float,
        lockout: Lockout,
        window: RequestWindow | None = None,
    ) -> Attempt:
        """Count one attempt and one failure *before* any comparison; return the hash.

        ``window`` is counted first; over it, nothing else is counted and the
        attempt comes back with ``attempts == 0`` and an over-limit ``window_hit``.
        """

    async def consume(
        self,
        phone: str,
        code_hash: bytes,
        now: float,
        verification_id: str = "",
        ranges: Sequence[str] = (),
    ) -> bool:
        """Delete the code if it is still ``code_hash`` and live, and clear the failures;
        its verification (``Attempt.verification_id``, passed back) turns ``approved``,
        and each of ``ranges`` counts an approval for the code's send.

        True for exactly one caller.
        """

    async def get_verification(self, verification_id: str, now: float) -> Verification | None:
        """The verification, its status as of ``now`` (``Verification.seen_at``); None
        when it never existed or its retention is over."""

    async def finish_verification(
        self, verification_id: str, status: VerificationStatus, now: float
    ) -> Verification | None:
        """Turn a pending verification to ``status`` (``canceled`` or ``approved``: its code
        goes too, so it can no longer be checked).

        Returns the record as it now stands; one that is no longer pending (as seen at
        ``now``) is left as it was and returned so.
        """

    async def set_channel(self, verification_id: str, channel: str) -> None:
        """Record that ``channel`` delivered the verification's code (another channel
        than the one it was opened for, when that one failed): only the record's channel
        changes. Nothing happens when there is no such record."""

    async def hit_window(self, window: RequestWindow, now: float) -> WindowHit:
        """Count one hit on ``window`` alone, for requests that never reach an operation."""

    async def ping(self) -> None:
        """Raise StoreUnavailable when the backend does not answer."""

    async def close(self) -> None: ...


class SendJournal(Protocol):
    """Sends whose outcome is not settled yet, kept where they outlive the process
    (``otpgate.store.journal``): what another process voids when this one dies
    before it knows whether the message went out."""

    def opened(self, request: SendRequest, now: float) -> None:
        """The send's charge is about to be asked for, at ``now``."""

    def settled(self, send_id: str) -> None:
        """Its outcome is known: delivered (charged), refused (nothing charged) or
        voided."""

    def orphans(self) -> list[tuple[SendRequest, float]]:
        """Take over the unsettled sends of processes that are gone (each with its
        issue's ``now``); from now on they are this journal's."""

    def close(self) -> None: ...


class DefenceStore(Protocol):
    """What operators see and undo of the defences, through the store every instance
    shares. Not on any request's path, so reads may take several round trips."""

    async def blocks(self, now: float) -> list[Block]:
        """Every block in force at ``now``."""

    async def lift_block(self, kind: str, scope: str, now: float) -> Block | None:
        """End a block now (a lockout: forget the phone's failures); the block as it
        was, or None when none was in force."""

    async def phone_state(self, phone: str, now: float, sends: Quota) -> PhoneState:
        """The phone's code, cooldown, failures and sends counted by ``sends``."""

    async def set_override(self, which: OverrideList, entry: str, present: bool) -> bool:
        """Add (or remove) ``entry``; True when that changed the list."""

    async def overrides(self) -> dict[OverrideList, list[str]]:
        """Both lists, each sorted."""

    async def range_stats(self, now: float) -> list[RangeStats]:
        """Every range with a send in the last day."""


@dataclass(frozen=True, slots=True)
class Event:
    """Something an app may react to, kept in the store until delivered.

    ``id`` is unique in the store and ordered as the events happened, so a receiver
    de-duplicates on it; ``type`` is ``verification.approved``, ``block.created``...
    """

    id: str
    type: str
    at: float
    data: dict[str, Any]


class EventLog(Protocol):
    """A durable queue of events, delivered in order by one owner at a time.

    A store built with events on appends them in the same atomic step as the change
    they tell of: ``verification.approved`` (consume, or an approve), ``.canceled``
    (a cancel, or a newer send replacing a pending code), ``.failed`` (a void),
    ``.max_attempts`` (that finish), ``block.created`` (a surge, conversion or
    lockout block). ``.expired`` comes from ``sweep_expired``.
    """

    async def append_event(self, type: str, data: dict[str, Any], now: float) -> None:
        """Queue one event made outside the store's own steps (an operator's action)."""

    async def next_events(
        self, owner: str, now: float, lease_seconds: float, limit: int
    ) -> list[Event] | None:
        """Take (or renew) the delivery lease for ``owner`` until ``now + lease_seconds``
        and return the oldest undelivered events; None while another owner holds it."""

    async def ack_event(self, owner: str, event_id: str) -> None:
        """``event_id`` and everything before it are delivered (only by the lease's
        owner: another's ack changes nothing)."""

    async def sweep_expired(self, now: float, limit: int) -> int:
        """Queue ``verification.expired`` for pending verifications whose code's time
        is up (at most ``limit``); how many."""


class SmsSender(Protocol):
    name: str

    @property
    def problem(self) -> str | None:
        """Why the provider is known to be broken (bad credentials...), or None.

        Readiness reports it; it never contains a secret.
        """

    async def send(self, phone: str, message: str) -> str:
        """Deliver ``message`` to ``phone`` (E.164) and return the provider's message id."""

    async def close(self) -> None: ...


class ChannelSender(Protocol):
    """Delivers codes on channels other than SMS: WhatsApp and voice calls (to an E.164
    number), email (to a canonical address)."""

    name: str

    @property
    def problem(self) -> str | None:
        """Why the provider is known to be broken, or None (as ``SmsSender.problem``)."""

    async def deliver(self, channel: str, to: str, message: Rendered) -> str:
        """Deliver ``message`` (an email's has a subject and an HTML body) to ``to`` on
        ``channel``, and return the provider's message id."""

    async def close(self) -> None: ...


class TokenSigner(Protocol):
    """Turns a successful verify into a signed token a backend can check on its own."""

    def sign(
        self,
        subject: str,
        token_id: str,
        purpose: str | None,
        now: float,
        channel: str | None = "sms",
    ) -> str:
        """A token saying ``subject`` (E.164, or an email address) proved control of it
        at ``now``, with a code delivered on ``channel`` (None: not known); or, with
        ``channel`` ``totp`` or ``recovery``, that ``subject`` (an app's identity) gave
        a right authenticator-app or recovery code (``domain.factors``).

        ``token_id`` is unique per token (its ``jti``); ``purpose``, when given, says
        what the verify was for. Pure computation: no I/O, never fails on valid input.
        """
