"""The two use cases: send a code, check a code.

Order matters and is the point of this module:
- a send is decided and stored *before* the SMS goes out, and undone if it fails,
  so a failed send neither dangles a code nor burns the user's cooldown;
- a verify counts the attempt *before* comparing, so concurrent guesses cannot
  exceed the limit, and consumes with a compare-and-delete, so one caller wins.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from otpgate.domain.codes import CodeHasher, generate_code
from otpgate.domain.errors import InvalidCode, LimitExceeded, TooManyAttempts
from otpgate.domain.phone import Phone, parse_phone
from otpgate.domain.policy import LIMIT_MESSAGES, OtpPolicy
from otpgate.sms.base import SmsSender
from otpgate.store.base import OtpStore, Quota, Refused, SendRequest


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sender = sender
        self._hasher = hasher
        self._policy = policy
        self._clock = clock

    @property
    def policy(self) -> OtpPolicy:
        return self._policy

    def _quotas(self, phone: Phone) -> tuple[Quota, ...]:
        p = self._policy
        return (
            Quota(
                "phone_send_limit",
                phone.e164,
                p.phone_sends_per_window,
                p.phone_send_window_seconds,
            ),
        )

    async def request_code(self, raw_phone: str) -> CodeSent:
        policy = self._policy
        phone = parse_phone(raw_phone, policy.phone_check)
        code = generate_code(policy.length)
        request = SendRequest(
            phone=phone.e164,
            code_hash=self._hasher.digest(phone.e164, code),
            ttl_seconds=policy.ttl_seconds,
            cooldown_seconds=policy.resend_cooldown_seconds,
            quotas=self._quotas(phone),
        )
        outcome = await self._store.issue(request, self._clock())
        if isinstance(outcome, Refused):
            raise LimitExceeded(
                outcome.kind, LIMIT_MESSAGES[outcome.kind], retry_after=outcome.retry_after
            )
        try:
            message_id = await self._sender.send(phone.e164, policy.render(code))
        except Exception:
            await self._store.undo_issue(outcome)
            raise
        return CodeSent(phone=phone, message_id=message_id, expires_in=policy.ttl_seconds)

    async def verify_code(self, raw_phone: str, code: str) -> Phone:
        policy = self._policy
        phone = parse_phone(raw_phone, policy.phone_check)
        now = self._clock()
        attempt = await self._store.begin_verify(phone.e164, policy.ttl_seconds, now)
        if attempt.attempts > policy.max_attempts:
            raise TooManyAttempts()
        if attempt.code_hash is None or not self._hasher.matches(
            attempt.code_hash, phone.e164, code
        ):
            raise InvalidCode()
        if not await self._store.consume(phone.e164, attempt.code_hash, now):
            raise InvalidCode()  # a concurrent verify of the same code won
        return phone
