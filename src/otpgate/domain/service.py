"""The two use cases: send a code, check a code.

Order matters and is the point of this module:
- a send is decided and stored *before* the SMS goes out, and voided if it fails,
  so a failed send neither dangles a code nor burns the user's cooldown; a store
  step that timed out is voided too, once the store answers (``voids``);
- a verify counts the attempt *before* comparing, so concurrent guesses cannot
  exceed the limit, and consumes with a compare-and-delete, so one caller wins.

A code goes to a phone (by SMS, WhatsApp or a voice call) or to an email address; both
are a ``Recipient``, keyed in the store by one string, under the same steps. A channel
may have others to fall back on (``fallback``): when its provider is down or broken,
the same stored code goes out on the next one, and the verification records the
channel that delivered it. A refused recipient falls back to nothing: another channel
to the same number would be refused, or worse, paid for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from otpgate.domain.catalog import CHANNELS, Channel
from otpgate.domain.codes import CodeHasher, generate_code
from otpgate.domain.email import Email, parse_email
from otpgate.domain.errors import (
    ChannelNotEnabled,
    DeliveryFailed,
    DeliveryUnavailable,
    InvalidCode,
    LandlineNotSupported,
    NoPendingCode,
    OtpError,
    RateLimited,
    SentBeforeShutdown,
    StoreUnavailable,
    TooManyAttempts,
    VerificationNotFound,
)
from otpgate.domain.limits import AbusePolicy, override_candidates, refusal
from otpgate.domain.phone import Phone, is_landline, parse_phone
from otpgate.domain.policy import OtpPolicy
from otpgate.domain.ports import (
    ChannelSender,
    Issued,
    OtpStore,
    Refused,
    RequestWindow,
    SendJournal,
    SendRequest,
    SmsSender,
    TokenSigner,
    Verification,
    VerificationStatus,
    WindowHit,
)
from otpgate.domain.recipient import Recipient, RecipientKind, recipient_of_key
from otpgate.domain.voids import PendingVoids

log = logging.getLogger(__name__)

# The channels that reach a phone; email reaches an address, and falls back to none.
PHONE_CHANNELS: tuple[Channel, ...] = ("sms", "whatsapp", "call")
# The phone channels that send a text, which a landline never receives.
TEXT_CHANNELS: tuple[Channel, ...] = ("sms", "whatsapp")


@dataclass(frozen=True, slots=True)
class CodeSent:
    phone: Recipient  # the recipient: a phone, or an email address
    message_id: str
    expires_in: int
    window_hit: WindowHit | None = None
    verification_id: str = ""
    channel: str = "sms"  # the channel that delivered it (a fallback's, when it came to that)


@dataclass(frozen=True, slots=True)
class Verified:
    phone: Recipient
    token: str  # signed proof of this verify, for the client's backend
    window_hit: WindowHit | None = None
    verification_id: str = ""


@dataclass(frozen=True, slots=True)
class SendOptions:
    """What a caller may change about one send beyond its purpose."""

    # A BCP 47 tag: the text's language; one without a template falls back (``pt-BR``
    # to ``pt``, then English), never refused.
    locale: str | None = None
    app: str | None = None  # ``{app}`` in the text, instead of the configured name
    android_app_hash: str | None = None  # the SMS Retriever line, instead of the configured
    details: str | None = None  # kept with the verification, shown when it is looked up
    # A send to a phone whose verification is pending (same purpose, channel and
    # details) continues it: the id stays, a fresh code replaces the old one.
    resume: bool = False
    # How the code goes out; ``email`` takes an address where the others take a phone.
    channel: Channel = "sms"


DEFAULT_SEND = SendOptions()


def new_verification_id() -> str:
    """Opaque and unguessable: ``VE`` and 128 random bits in hex."""
    return f"VE{uuid.uuid4().hex}"


class OtpService:
    def __init__(
        self,
        store: OtpStore,
        sender: SmsSender,
        hasher: CodeHasher,
        policy: OtpPolicy,
        limits: AbusePolicy,
        signer: TokenSigner,
        clock: Callable[[], float] = time.time,
        *,
        channels: Mapping[str, ChannelSender] | None = None,
        fallback: Mapping[str, Sequence[str]] | None = None,
        journal: SendJournal | None = None,
    ) -> None:
        """``sender`` delivers SMS; ``channels`` each other channel that is enabled (a
        channel without one is refused); ``fallback`` what each channel falls back to,
        in order (phone channels only, each enabled); ``journal`` keeps each send until
        its outcome is settled, where another process finds it if this one dies."""
        self._store = store
        self._sender = sender
        self._hasher = hasher
        self._policy = policy
        self._limits = limits
        self._signer = signer
        self._clock = clock
        self._voids = PendingVoids(store, journal)
        self._journal = self._voids.journal
        self._channels: dict[str, ChannelSender] = dict(channels or {})
        self._chains = _chains(set(self._channels) | {"sms"}, fallback or {})
        # With a phone channel besides SMS, a verify looks up which one delivered its code
        # (the token's ``amr`` says so); with SMS alone it is SMS, and costs no look-up.
        self._phone_channels = any(c in self._channels for c in PHONE_CHANNELS)

    @property
    def channels(self) -> frozenset[str]:
        """The channels a code can be requested on."""
        return frozenset(self._chains)

    @property
    def pending_voids(self) -> PendingVoids:
        return self._voids

    async def start(self) -> None:
        """Void what processes that are gone left unsettled, then keep looking for
        such sends in the background (before this process serves)."""
        await self._voids.recover()
        self._voids.watch()

    async def close(self) -> None:
        """Stop voiding in the background (before the store closes)."""
        await self._voids.close()

    async def _counted(self, exc: OtpError, window: RequestWindow | None) -> OtpError:
        """A request refused before it reaches the store still counts in its window."""
        if window is None:
            return exc
        hit = await self._store.hit_window(window, self._clock())
        if hit.over(window):
            exc = RateLimited(hit.reset_seconds)
        exc.window_hit = hit
        return exc

    async def request_code(
        self,
        raw_phone: str,
        client_ip: str,
        window: RequestWindow | None = None,
        purpose: str | None = None,
        options: SendOptions = DEFAULT_SEND,
    ) -> CodeSent:
        """Send a code for ``purpose`` on ``options.channel``; ``raw_phone`` is the
        recipient as the client wrote it (an E.164 number, or for email an address);
        ``window`` is the client's request limit, counted in the same step."""
        channel = options.channel
        recipient: Recipient
        try:
            if channel == "email":
                recipient = parse_email(raw_phone)
            else:
                recipient = parse_phone(raw_phone, self._policy.phone_check)
            chain = self._chains.get(channel)
            if chain is None:
                raise ChannelNotEnabled(channel)
        except OtpError as exc:
            raise await self._counted(exc, window) from None
        try:
            return await self._send(recipient, client_ip, window, purpose, options, chain)
        except OtpError as exc:
            exc.phone = recipient  # the access line names it, masked
            raise

    async def _send(
        self,
        recipient: Recipient,
        client_ip: str,
        window: RequestWindow | None,
        purpose: str | None,
        options: SendOptions,
        chain: tuple[Channel, ...],
    ) -> CodeSent:
        policy, limits = self._policy, self._limits
        email = isinstance(recipient, Email)
        code: str
        fixed_code: str | None
        if isinstance(recipient, Email):
            fixed_code = None
            code = generate_code(policy.length)
            request = self._email_request(recipient, code, client_ip, purpose, options)
        else:
            fixed_code = policy.test_numbers.code_for(recipient.e164)
            try:
                limits.check_country(recipient)
                if fixed_code is None:  # a test number is sent nothing
                    chain = self._landline_chain(recipient, chain)
            except OtpError as exc:
                raise await self._counted(exc, window) from None
            code = fixed_code or generate_code(policy.length)
            request = self._phone_request(recipient, code, client_ip, purpose, options)
        outcome = await self._issue(request, window, email)
        now = outcome.now
        vid = outcome.verification_id
        if fixed_code is not None:
            # A test number: stored and limited like any other, but no SMS goes out.
            self._journal.settled(request.send_id)
            return CodeSent(
                recipient,
                str(uuid.uuid4()),
                policy.ttl_seconds,
                outcome.window_hit,
                vid,
                options.channel,
            )
        with self._handed_over(request, now):
            try:
                message_id, channel = await self._deliver(
                    chain, recipient.key, code, purpose, options
                )
            except OtpError as exc:
                await self._voids.void(request, now)
                exc.window_hit = outcome.window_hit
                exc.verification_id = vid  # its record says "failed"
                raise
            except Exception:
                await self._voids.void(request, now)
                raise
            except asyncio.CancelledError:
                # Cut off while the provider had it: the message may be out, so it stays
                # charged.
                self._journal.settled(request.send_id)
                raise
            self._journal.settled(request.send_id)  # handed to the provider: stays charged
            if channel != options.channel and vid:
                # A fallback delivered it: the verification says which channel did.
                with contextlib.suppress(StoreUnavailable):
                    await self._store.set_channel(vid, channel)
        return CodeSent(recipient, message_id, policy.ttl_seconds, outcome.window_hit, vid, channel)

    def _landline_chain(self, phone: Phone, chain: tuple[Channel, ...]) -> tuple[Channel, ...]:
        """``chain``, for a number libphonenumber types a fixed line without its texts: a
        text would fail, or be paid for and never arrive. A text asked for is refused
        before it is charged (a fallback is for a provider's failure, not the number's);
        a call falls back to no text."""
        if self._policy.texts_to_landlines or not any(c in TEXT_CHANNELS for c in chain):
            return chain
        if not is_landline(phone.e164):
            return chain
        if chain[0] in TEXT_CHANNELS:
            raise LandlineNotSupported(voice="call" in self._chains)
        return tuple(c for c in chain if c not in TEXT_CHANNELS)

    async def _issue(
        self, request: SendRequest, window: RequestWindow | None, email: bool
    ) -> Issued:
        """Charge the send in the store (``Issued.now``: when), journaled until its
        outcome is settled; a refusal is raised as its error."""
        await self._voids.settle(request.phone)
        now = self._clock()
        self._journal.opened(request, now)
        try:
            outcome = await self._store.issue(request, now, window)
        except StoreUnavailable as exc:
            if exc.may_have_run:
                # The step may still run on the backend, or have run with its answer lost.
                self._voids.add(request, now)
            else:
                self._journal.settled(request.send_id)  # it never reached the store
            raise
        except asyncio.CancelledError:
            self._voids.add(request, now)
            raise
        if isinstance(outcome, Refused):
            self._journal.settled(request.send_id)  # nothing was charged
            raise _with_hit(
                refusal(outcome.kind, outcome.retry_after, email=email), outcome.window_hit
            )
        return outcome

    @contextlib.contextmanager
    def _handed_over(self, request: SendRequest, now: float) -> Iterator[None]:
        """From the provider call on, a cancellation (the shutdown timeout running out)
        voids nothing: the message may be out. It leaves as SentBeforeShutdown, with the
        cooldown the store started at ``now``, so the answer says so."""
        try:
            yield
        except asyncio.CancelledError as exc:
            left = request.cooldown_seconds - (self._clock() - now)
            raise SentBeforeShutdown(max(1, math.ceil(left))) from exc

    def _phone_request(
        self, phone: Phone, code: str, client_ip: str, purpose: str | None, options: SendOptions
    ) -> SendRequest:
        policy, limits = self._policy, self._limits
        ranges = limits.ranges(phone)  # the surge and conversion rules' scopes too
        return SendRequest(
            phone=phone.e164,
            code_hash=self._hasher.digest(phone.e164, code, purpose),
            ttl_seconds=policy.ttl_seconds,
            cooldown_seconds=limits.resend_cooldown_seconds,
            quotas=limits.send_quotas(phone),
            distinct=limits.send_distinct(phone, client_ip),
            surges=limits.send_surges(ranges),
            send_id=uuid.uuid4().hex,
            verification_id=new_verification_id(),
            purpose=purpose,
            channel=options.channel,
            retention_seconds=policy.verification_retention_seconds,
            details=options.details,
            resume=options.resume,
            ranges=ranges,
            conversions=limits.send_conversions(ranges, policy.ttl_seconds),
            overrides=override_candidates(phone),
        )

    def _email_request(
        self, email: Email, code: str, client_ip: str, purpose: str | None, options: SendOptions
    ) -> SendRequest:
        """As a phone's, with the address's and its domain's limits; no number-range
        guard, statistic or override applies to an address."""
        policy, limits = self._policy, self._limits
        return SendRequest(
            phone=email.address,
            code_hash=self._hasher.digest(email.address, code, purpose),
            ttl_seconds=policy.ttl_seconds,
            cooldown_seconds=limits.resend_cooldown_seconds,
            quotas=limits.email_quotas(email),
            distinct=limits.email_distinct(email, client_ip),
            send_id=uuid.uuid4().hex,
            verification_id=new_verification_id(),
            purpose=purpose,
            channel="email",
            retention_seconds=policy.verification_retention_seconds,
            details=options.details,
            resume=options.resume,
        )

    async def _deliver(
        self,
        chain: tuple[Channel, ...],
        to: str,
        code: str,
        purpose: str | None,
        options: SendOptions,
    ) -> tuple[str, str]:
        """Send the code on the first channel of ``chain`` that takes it: the provider's
        message id and that channel. A provider that is down or broken passes the code
        on to the next channel; a refused recipient, or the last channel's failure, is
        the answer."""
        policy = self._policy
        last = len(chain) - 1
        for index, channel in enumerate(chain):
            try:
                if channel == "sms":
                    text = policy.render(
                        code,
                        purpose,
                        locale=options.locale,
                        app=options.app,
                        android_app_hash=options.android_app_hash,
                    )
                    return await self._sender.send(to, text), channel
                message = policy.message.compose(
                    channel,
                    code,
                    policy.ttl_seconds,
                    purpose,
                    options.locale,
                    app=options.app,
                )
                return await self._channels[channel].deliver(channel, to, message), channel
            except (DeliveryUnavailable, DeliveryFailed) as exc:
                if index == last:
                    raise
                log.warning(
                    "%s delivery failed (%s); falling back to %s",
                    channel,
                    exc.code,
                    chain[index + 1],
                    extra={"channel": channel, "error_code": exc.code},
                )
        raise AssertionError("unreachable: a chain has at least one channel")

    async def verify_code(
        self,
        raw_phone: str | None,
        code: str,
        window: RequestWindow | None = None,
        *,
        purpose: str | None = None,
        verification_id: str | None = None,
        kind: RecipientKind = "phone",
    ) -> Verified:
        """Check a code once, for the recipient or the verification named (or both, which
        must agree) and the purpose it was requested for; ``raw_phone`` is a phone, or
        with ``kind="email"`` an address. ``window`` is the client's request limit,
        counted in the same step."""
        recipient: Recipient
        try:
            if verification_id is not None:
                recipient = await self._recipient_of(verification_id, raw_phone, kind)
            elif kind == "email":
                recipient = parse_email(raw_phone or "")
            else:
                recipient = parse_phone(raw_phone or "", self._policy.phone_check)
        except OtpError as exc:
            raise await self._counted(exc, window) from None
        try:
            return await self._verify(recipient, code, window, purpose, verification_id)
        except OtpError as exc:
            exc.phone = recipient
            raise

    async def _recipient_of(
        self, verification_id: str, raw: str | None, kind: RecipientKind
    ) -> Recipient:
        """The recipient a verification was opened for; an unknown one (or a recipient
        that is not its own) answers as a wrong code does."""
        record = await self._store.get_verification(verification_id, self._clock())
        if record is None:
            raise NoPendingCode()
        recipient = recipient_of_key(record.phone)  # checked when it was sent
        if raw is not None:
            named = parse_email(raw) if kind == "email" else parse_phone(raw, "possible")
            if named.key != recipient.key:
                raise NoPendingCode()
        return recipient

    async def _verify(
        self,
        recipient: Recipient,
        code: str,
        window: RequestWindow | None,
        purpose: str | None,
        verification_id: str | None,
    ) -> Verified:
        policy = self._policy
        key = recipient.key
        email = isinstance(recipient, Email)
        now = self._clock()
        attempt = await self._store.begin_verify(
            key, policy.ttl_seconds, now, self._limits.lockout, window
        )
        hit = attempt.window_hit
        if hit is not None and window is not None and hit.over(window):
            raise _with_hit(RateLimited(hit.reset_seconds), hit)
        if attempt.locked_for:
            refused = refusal(self._limits.lockout.kind, attempt.locked_for, email=email)
            raise _with_hit(refused, hit)
        if attempt.attempts > policy.max_attempts:
            raise _with_hit(TooManyAttempts(), hit)
        named = verification_id is None or attempt.verification_id == verification_id
        if (
            attempt.code_hash is None
            or not named
            or not self._hasher.matches(attempt.code_hash, key, code, purpose)
        ):
            if attempt.verification_id and attempt.attempts == policy.max_attempts:
                await self._close(attempt.verification_id, now)
            if attempt.code_hash is None or not named:
                raise _with_hit(NoPendingCode(), hit)
            wrong = InvalidCode()
            wrong.compared_verification_id = attempt.verification_id or None
            raise _with_hit(wrong, hit)
        vid = attempt.verification_id
        ranges = () if isinstance(recipient, Email) else self._limits.ranges(recipient)
        if not await self._store.consume(key, attempt.code_hash, now, vid, ranges):
            raise _with_hit(NoPendingCode(), hit)  # a concurrent verify of the same code won
        if email:
            channel: str | None = "email"
        elif self._phone_channels and vid:
            channel = await self._delivered_by(vid, now)
        else:
            channel = "sms"
        # A code stored before verifications were recorded has none: a token id of its own.
        token = self._signer.sign(
            key, vid or uuid.uuid4().hex, purpose=purpose, now=now, channel=channel
        )
        return Verified(recipient, token, hit, vid)

    async def _delivered_by(self, verification_id: str, now: float) -> str | None:
        """The channel that delivered a verified code, None when the store cannot say
        (the code is used up: the verify stands all the same)."""
        try:
            record = await self._store.get_verification(verification_id, now)
        except StoreUnavailable:
            return None
        return record.channel if record is not None else None

    async def _close(self, verification_id: str, now: float) -> None:
        """The last allowed attempt failed: the verification says so at once."""
        # If the store fails here, the code refuses further attempts all the same.
        with contextlib.suppress(StoreUnavailable):
            await self._store.finish_verification(verification_id, "max_attempts_reached", now)

    async def verification(self, verification_id: str) -> Verification:
        record = await self._store.get_verification(verification_id, self._clock())
        if record is None:
            raise VerificationNotFound()
        return record

    async def cancel(self, verification_id: str) -> Verification:
        """Cancel a pending verification (its code stops working); any other is
        returned as it stands."""
        return await self._finish(verification_id, "canceled")

    async def approve(self, verification_id: str) -> Verification:
        """Approve a pending verification without a code: the app proved the user
        some other way. Its code stops working; no token is signed. Any other is
        returned as it stands."""
        return await self._finish(verification_id, "approved")

    async def _finish(self, verification_id: str, status: VerificationStatus) -> Verification:
        record = await self._store.finish_verification(verification_id, status, self._clock())
        if record is None:
            raise VerificationNotFound()
        return record


def _with_hit(exc: OtpError, hit: WindowHit | None) -> OtpError:
    exc.window_hit = hit
    return exc


def _chains(
    enabled: set[str], fallback: Mapping[str, Sequence[str]]
) -> dict[str, tuple[Channel, ...]]:
    """Each enabled channel, and the channels it falls back to, in the order tried."""
    chains: dict[str, tuple[Channel, ...]] = {c: (c,) for c in CHANNELS if c in enabled}
    for first, rest in fallback.items():
        names = (first, *rest)
        shown = ">".join(names)
        chain = tuple(c for name in names for c in CHANNELS if c == name)
        if len(chain) != len(names):
            raise ValueError(f"fallback {shown}: not a channel ({', '.join(CHANNELS)})")
        for channel in chain:
            if channel not in enabled:
                raise ValueError(f"fallback {shown}: {channel} is not enabled")
            if channel not in PHONE_CHANNELS:
                raise ValueError(f"fallback {shown}: only phone channels fall back")
        if len(set(chain)) != len(chain):
            raise ValueError(f"fallback {shown}: a channel appears twice")
        chains[first] = chain
    return chains
