"""The two use cases: send a code, check a code.

Order matters and is the point of this module:
- a send is decided and stored *before* the SMS goes out, and undone if it fails,
  so a failed send neither dangles a code nor burns the user's cooldown;
- a verify counts the attempt *before* comparing, so concurrent guesses cannot
  exceed the limit, and consumes with a compare-and-delete, so one caller wins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from otpgate.domain.codes import CodeHasher, generate_code
from otpgate.domain.errors import InvalidCode, StoreUnavailable, TooManyAttempts
from otpgate.domain.limits import AbusePolicy, refusal
from otpgate.domain.phone import Phone, parse_phone
from otpgate.domain.policy import OtpPolicy
from otpgate.sms.base import SmsSender
from otpgate.store.base import OtpStore, Refused, SendRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CodeSent:
    phone: Phone
    message_id: str
    expires_in: int


class OtpService:
    def __init__(
        self,
        store: OtpStore,
        sender: SmsSender,
        hasher: CodeHasher,
        policy: OtpPolicy,
        limits: AbusePolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sender = sender
        self._hasher = hasher
        self._policy = policy
        self._limits = limits
        self._clock = clock

    @property
    def policy(self) -> OtpPolicy:
        return self._policy

    async def request_code(self, raw_phone: str, client_ip: str) -> CodeSent:
        policy, limits = self._policy, self._limits
        phone = parse_phone(raw_phone, policy.phone_check)
        limits.check_country(phone)
        code = generate_code(policy.length)
        request = SendRequest(
            phone=phone.e164,
            code_hash=self._hasher.digest(phone.e164, code),
            ttl_seconds=policy.ttl_seconds,
            cooldown_seconds=limits.resend_cooldown_seconds,
            quotas=limits.send_quotas(phone),
            distinct=limits.send_distinct(phone, client_ip),
            surges=limits.send_surges(phone),
        )
        outcome = await self._store.issue(request, self._clock())
        if isinstance(outcome, Refused):
            raise refusal(outcome.kind, outcome.retry_after)
        try:
            message_id = await self._sender.send(phone.e164, policy.render(code))
        except Exception:
            try:
                await self._store.undo_issue(outcome)
            except StoreUnavailable:
                log.warning("could not undo a failed send; the code expires on its own")
            raise
        return CodeSent(phone=phone, message_id=message_id, expires_in=policy.ttl_seconds)

    async def verify_code(self, raw_phone: str, code: str) -> Phone:
        policy = self._policy
        phone = parse_phone(raw_phone, policy.phone_check)
        now = self._clock()
        attempt = await self._store.begin_verify(
            phone.e164, policy.ttl_seconds, now, self._limits.lockout
        )
        if attempt.locked_for:
            raise refusal(self._limits.lockout.kind, attempt.locked_for)
        if attempt.attempts > policy.max_attempts:
            raise TooManyAttempts()
        if attempt.code_hash is None or not self._hasher.matches(
            attempt.code_hash, phone.e164, code
        ):
            raise InvalidCode()
        if not await self._store.consume(phone.e164, attempt.code_hash, now):
            raise InvalidCode()  # a concurrent verify of the same code won
        return phone
