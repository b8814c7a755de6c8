"""The two use cases: send a code, check a code.

Order matters and is the point of this module:
- a send is decided and stored *before* the SMS goes out, and voided if it fails,
  so a failed send neither dangles a code nor burns the user's cooldown; a store
  step that timed out is voided too, once the store answers (``voids``);
- a verify counts the attempt *before* comparing, so concurrent guesses cannot
  exceed the limit, and consumes with a compare-and-delete, so one caller wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from otpgate.domain.codes import CodeHasher, generate_code
from otpgate.domain.errors import (
    InvalidCode,
    NoPendingCode,
    OtpError,
    RateLimited,
    StoreUnavailable,
    TooManyAttempts,
    VerificationNotFound,
)
from otpgate.domain.limits import AbusePolicy, override_candidates, refusal
from otpgate.domain.phone import Phone, parse_phone
from otpgate.domain.policy import OtpPolicy
from otpgate.domain.ports import (
    OtpStore,
    Refused,
    RequestWindow,
    SendRequest,
    SmsSender,
    TokenSigner,
    Verification,
    VerificationStatus,
    WindowHit,
)
from otpgate.domain.voids import PendingVoids


@dataclass(frozen=True, slots=True)
class CodeSent:
    phone: Phone
    message_id: str
    expires_in: int
    window_hit: WindowHit | None = None
    verification_id: str = ""


@dataclass(frozen=True, slots=True)
class Verified:
    phone: Phone
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
    ) -> None:
        self._store = store
        self._sender = sender
        self._hasher = hasher
        self._policy = policy
        self._limits = limits
        self._signer = signer
        self._clock = clock
        self._voids = PendingVoids(store)

    @property
    def pending_voids(self) -> PendingVoids:
        return self._voids

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
        """Send a code for ``purpose``; ``window`` is the client's request limit, counted
        in the same step."""
        try:
            phone = parse_phone(raw_phone, self._policy.phone_check)
        except OtpError as exc:
            raise await self._counted(exc, window) from None
        try:
            return await self._send(phone, client_ip, window, purpose, options)
        except OtpError as exc:
            exc.phone = phone  # the access line names it, masked
            raise

    async def _send(
        self,
        phone: Phone,
        client_ip: str,
        window: RequestWindow | None,
        purpose: str | None,
        options: SendOptions,
    ) -> CodeSent:
        policy, limits = self._policy, self._limits
        try:
            limits.check_country(phone)
        except OtpError as exc:
            raise await self._counted(exc, window) from None
        fixed_code = policy.test_numbers.code_for(phone.e164)
        code = fixed_code or generate_code(policy.length)
        request = SendRequest(
            phone=phone.e164,
            code_hash=self._hasher.digest(phone.e164, code, purpose),
            ttl_seconds=policy.ttl_seconds,
            cooldown_seconds=limits.resend_cooldown_seconds,
            quotas=limits.send_quotas(phone),
            distinct=limits.send_distinct(phone, client_ip),
            surges=limits.send_surges(phone),
            send_id=uuid.uuid4().hex,
            verification_id=new_verification_id(),
            purpose=purpose,
            retention_seconds=policy.verification_retention_seconds,
            details=options.details,
            resume=options.resume,
            ranges=limits.ranges(phone),
            conversions=limits.send_conversions(phone, policy.ttl_seconds),
            overrides=override_candidates(phone),
        )
        await self._voids.settle(phone.e164)
        now = self._clock()
        try:
            outcome = await self._store.issue(request, now, window)
        except (StoreUnavailable, asyncio.CancelledError):
            # The step may still run on the backend, or have run with its answer lost.
            self._voids.add(request, now)
            raise
        if isinstance(outcome, Refused):
            raise _with_hit(refusal(outcome.kind, outcome.retry_after), outcome.window_hit)
        vid = outcome.verification_id
        if fixed_code is not None:
            # A test number: stored and limited like any other, but no SMS goes out.
            return CodeSent(phone, str(uuid.uuid4()), policy.ttl_seconds, outcome.window_hit, vid)
        try:
            text = policy.render(
                code,
                purpose,
                locale=options.locale,
                app=options.app,
                android_app_hash=options.android_app_hash,
            )
            message_id = await self._sender.send(phone.e164, text)
        except OtpError as exc:
            await self._void(request, now)
            exc.window_hit = outcome.window_hit
            exc.verification_id = vid  # its record says "failed"
            raise
        except Exception:
            await self._void(request, now)
            raise
        return CodeSent(phone, message_id, policy.ttl_seconds, outcome.window_hit, vid)

    async def _void(self, request: SendRequest, now: float) -> None:
        try:
            await self._store.void_issue(request, now)
        except StoreUnavailable:
            self._voids.add(request, now)  # once the store answers again

    async def verify_code(
        self,
        raw_phone: str | None,
        code: str,
        window: RequestWindow | None = None,
        *,
        purpose: str | None = None,
        verification_id: str | None = None,
    ) -> Verified:
        """Check a code once, for the phone or the verification named (or both, which
        must agree) and the purpose it was requested for; ``window`` is the client's
        request limit, counted in the same step."""
        try:
            if verification_id is not None:
                phone = await self._phone_of(verification_id, raw_phone)
            else:
                phone = parse_phone(raw_phone or "", self._policy.phone_check)
        except OtpError as exc:
            raise await self._counted(exc, window) from None
        try:
            return await self._verify(phone, code, window, purpose, verification_id)
        except OtpError as exc:
            exc.phone = phone
            raise

    async def _phone_of(self, verification_id: str, raw_phone: str | None) -> Phone:
        """The phone a verification was opened for; an unknown one (or a phone that is
        not its own) answers as a wrong code does."""
        record = await self._store.get_verification(verification_id, self._clock())
        if record is None:
            raise NoPendingCode()
        phone = parse_phone(record.phone, "possible")  # checked when it was sent
        if raw_phone is not None and parse_phone(raw_phone, "possible").e164 != phone.e164:
            raise NoPendingCode()
        return phone

    async def _verify(
        self,
        phone: Phone,
        code: str,
        window: RequestWindow | None,
        purpose: str | None,
        verification_id: str | None,
    ) -> Verified:
        policy = self._policy
        now = self._clock()
        attempt = await self._store.begin_verify(
            phone.e164, policy.ttl_seconds, now, self._limits.lockout, window
        )
        hit = attempt.window_hit
        if hit is not None and window is not None and hit.over(window):
            raise _with_hit(RateLimited(hit.reset_seconds), hit)
        if attempt.locked_for:
            raise _with_hit(refusal(self._limits.lockout.kind, attempt.locked_for), hit)
        if attempt.attempts > policy.max_attempts:
            raise _with_hit(TooManyAttempts(), hit)
        named = verification_id is None or attempt.verification_id == verification_id
        if (
            attempt.code_hash is None
            or not named
            or not self._hasher.matches(attempt.code_hash, phone.e164, code, purpose)
        ):
            if attempt.verification_id and attempt.attempts == policy.max_attempts:
                await self._close(attempt.verification_id, now)
            if attempt.code_hash is None or not named:
                raise _with_hit(NoPendingCode(), hit)
            wrong = InvalidCode()
            wrong.compared_verification_id = attempt.verification_id or None
            raise _with_hit(wrong, hit)
        vid = attempt.verification_id
        ranges = self._limits.ranges(phone)
        if not await self._store.consume(phone.e164, attempt.code_hash, now, vid, ranges):
            raise _with_hit(NoPendingCode(), hit)  # a concurrent verify of the same code won
        # A code stored before verifications were recorded has none: a token id of its own.
        token = self._signer.sign(phone.e164, vid or uuid.uuid4().hex, purpose=purpose, now=now)
        return Verified(phone, token, hit, vid)

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
