"""The factor use cases: enrol an authenticator app, activate it with a first code,
check its codes, and recovery codes for when the phone is gone.

As with message codes (``otpgate.domain.service``), a check counts a failure *before* it
compares, so concurrent guesses cannot get past the lockout, and a success is one
compare-and-set in the store (the time step, or the recovery code), so one caller wins.
The lockout is the message codes' arithmetic (``limits.Lockout``) and settings, counted
per identity in the credential database beside the factors it guards. A right code
answers the same signed token as a verified message code, ``sub`` the identity and
``amr`` saying how (``otp`` for an authenticator app, ``rec`` for a recovery code).

Every change is told as an event on the hot store's queue (``ports.EventLog``); an
event lost to a hot store that does not answer is logged, and the change stands.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from otpgate.domain.codes import CodeHasher
from otpgate.domain.errors import InvalidCode, StoreUnavailable
from otpgate.domain.factors import recovery, totp
from otpgate.domain.factors.errors import FactorAlreadyVerified, FactorLocked, FactorNotFound
from otpgate.domain.factors.ports import ChallengePage, CredentialStore
from otpgate.domain.factors.values import (
    Challenge,
    Entity,
    Factor,
    TotpConfig,
    check_factor_id,
    new_challenge_id,
    new_entity_id,
    new_factor_id,
    parse_identity,
)
from otpgate.domain.limits import Lockout
from otpgate.domain.ports import EventLog, TokenSigner

log = logging.getLogger(__name__)

# The token's "channel" for each way a factor proves the user (``amr``: ``otp`` and
# ``rec``, see ``otpgate.tokens.signer``).
TOTP_METHOD = "totp"
RECOVERY_METHOD = "recovery"


@dataclass(frozen=True, slots=True)
class FactorPolicy:
    issuer: str  # the otpauth URI's issuer: the name an authenticator app shows
    totp: TotpConfig = field(default_factory=TotpConfig)
    recovery_codes: int = 10
    lockout: Lockout = field(default_factory=Lockout)


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A new factor and what the authenticator app needs, shown this once."""

    factor: Factor
    secret: str  # base32
    uri: str  # otpauth://


@dataclass(frozen=True, slots=True)
class Approved:
    identity: str
    token: str
    method: str  # TOTP_METHOD or RECOVERY_METHOD
    factor_id: str | None = None
    recovery_codes_left: int | None = None


class FactorService:
    def __init__(
        self,
        store: CredentialStore,
        events: EventLog,
        signer: TokenSigner,
        hasher: CodeHasher,
        policy: FactorPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._events = events
        self._signer = signer
        self._hasher = hasher
        self._policy = policy
        self._clock = clock

    @property
    def policy(self) -> FactorPolicy:
        return self._policy

    # -- authenticator apps --------------------------------------------------------------
    async def enrol(
        self,
        raw_identity: str,
        name: str | None = None,
        config: TotpConfig | None = None,
        *,
        account: str | None = None,
        issuer: str | None = None,
    ) -> Enrolment:
        """A new, unverified TOTP factor with a fresh secret: the policy's settings
        unless ``config``; the URI names ``account`` (the identity unless given) at
        ``issuer`` (the policy's unless given)."""
        identity = parse_identity(raw_identity)
        now = self._clock()
        factor = Factor(
            id=new_factor_id(),
            identity=identity,
            kind="totp",
            status="unverified",
            config=config or self._policy.totp,
            created_at=now,
            name=name,
        )
        secret = totp.new_secret()
        await self._store.add_factor(factor, secret)
        await self._emit("factor.created", _factor_data(factor), now)
        uri = totp.provisioning_uri(
            secret, factor.config, account or identity, issuer or self._policy.issuer
        )
        return Enrolment(factor, totp.base32(secret), uri)

    async def factors(self, raw_identity: str) -> list[Factor]:
        return await self._store.factors(parse_identity(raw_identity))

    async def factor(self, raw_identity: str, raw_factor_id: str) -> Factor:
        """One of the identity's factors; FactorNotFound when it has no such one."""
        factor_id = check_factor_id(raw_factor_id)
        for factor in await self.factors(raw_identity):
            if factor.id == factor_id:
                return factor
        raise FactorNotFound()

    async def delete(self, raw_identity: str, raw_factor_id: str, by: str = "") -> None:
        """Remove a factor now; ``by`` names an operator who did it, for the event."""
        identity = parse_identity(raw_identity)
        factor_id = check_factor_id(raw_factor_id)
        if not await self._store.delete_factor(identity, factor_id):
            raise FactorNotFound()
        data = {"identity": identity, "factorId": factor_id}
        await self._emit("factor.deleted", {**data, "by": by} if by else data, self._clock())

    async def activate(self, raw_identity: str, raw_factor_id: str, code: str) -> Factor:
        """The first right code turns the factor ``verified``."""
        identity = parse_identity(raw_identity)
        factor_id = check_factor_id(raw_factor_id)
        factor, step = await self._check(identity, factor_id, code, activate=True)
        verified = replace(factor, status="verified", verified_at=self._clock(), last_step=step)
        await self._emit("factor.verified", _factor_data(verified), self._clock())
        return verified

    async def challenge(self, raw_identity: str, raw_factor_id: str, code: str) -> Approved:
        """Check a code of a verified factor: a token when it is right."""
        identity = parse_identity(raw_identity)
        factor_id = check_factor_id(raw_factor_id)
        await self._check(identity, factor_id, code, activate=False)
        now = self._clock()
        data = {"identity": identity, "factorId": factor_id, "method": TOTP_METHOD}
        await self._emit("challenge.approved", data, now)
        token = self._signer.sign(identity, uuid.uuid4().hex, None, now, channel=TOTP_METHOD)
        return Approved(identity, token, TOTP_METHOD, factor_id=factor_id)

    async def _check(
        self, identity: str, factor_id: str, code: str, *, activate: bool
    ) -> tuple[Factor, int]:
        found = await self._store.factor_with_secret(identity, factor_id)
        if found is None:
            raise FactorNotFound()
        factor, secret = found
        if activate and factor.status == "verified":
            raise FactorAlreadyVerified()
        await self._count_attempt(identity, factor_id)
        now = self._clock()
        step = totp.matching_step(secret, factor.config, code, now)
        reason = "invalid_code"
        if factor.status == "unverified" and not activate:
            reason = "factor_unverified"  # it cannot take a challenge before a first code
        elif step is not None and factor.last_step is not None and step <= factor.last_step:
            reason = "code_replayed"
        elif step is not None:
            if await self._store.accept_step(identity, factor_id, step, now, activate=activate):
                return factor, step
            reason = "code_replayed"  # a concurrent check of the same code won
        await self._failed(identity, factor_id, reason, now)
        raise InvalidCode()

    # -- entities and kept challenges (the Twilio Verify compatible routes) ---------------
    async def add_entity(self, service: str, name: str, raw_identity: str) -> Entity:
        """The service's entity ``name`` (for the factors' identity), made when new."""
        identity = parse_identity(raw_identity)
        entity = Entity(new_entity_id(), service, name, identity, self._clock())
        return await self._store.add_entity(entity)

    async def entity(self, service: str, name: str) -> Entity | None:
        return await self._store.entity(service, name)

    async def entities(self, service: str, offset: int, limit: int) -> list[Entity]:
        return await self._store.entities(service, offset, limit)

    async def delete_entity(self, entity: Entity) -> bool:
        """Remove the entity and everything of its identity: factors, challenges and
        recovery codes."""
        if not await self._store.delete_entity(entity):
            return False
        data = {"identity": entity.identity, "entity": entity.id}
        await self._emit("entity.deleted", data, self._clock())
        return True

    async def open_challenge(
        self, raw_identity: str, raw_factor_id: str, code: str | None, ttl: float
    ) -> Challenge:
        """A challenge of the factor, kept for ``ttl`` seconds: ``approved`` at once when
        ``code`` is right, ``pending`` for any other (a wrong code, a replayed one, a
        factor not yet verified), as ``challenge`` checks it. A lockout raises, and keeps
        nothing."""
        factor = await self.factor(raw_identity, raw_factor_id)
        now = self._clock()
        kept = Challenge(
            new_challenge_id(), factor.identity, factor.id, "pending", now, now, now + ttl
        )
        if code is not None and await self._approves(factor, code):
            kept = replace(kept, status="approved", responded_at=now)
        await self._store.add_challenge(kept)
        return kept

    async def respond(self, raw_identity: str, challenge_id: str, code: str) -> Challenge:
        """A code for a pending challenge: ``approved`` when it is right; a challenge
        that is not pending (or has expired) is answered as it stands."""
        identity = parse_identity(raw_identity)
        kept = await self.kept_challenge(identity, challenge_id)
        if kept.status != "pending" or kept.expires_at <= self._clock():
            return kept
        factor = await self.factor(identity, kept.factor_id)
        if await self._approves(factor, code):
            await self._store.approve_challenge(identity, challenge_id, self._clock())
        return await self.kept_challenge(identity, challenge_id)

    async def kept_challenge(self, raw_identity: str, challenge_id: str) -> Challenge:
        kept = await self._store.challenge(parse_identity(raw_identity), challenge_id)
        if kept is None:
            raise FactorNotFound()
        return kept

    async def kept_challenges(self, raw_identity: str, page: ChallengePage) -> list[Challenge]:
        return await self._store.challenges(parse_identity(raw_identity), page)

    async def _approves(self, factor: Factor, code: str) -> bool:
        try:
            await self.challenge(factor.identity, factor.id, code)
        except InvalidCode:
            return False
        return True

    # -- recovery codes ------------------------------------------------------------------
    async def new_recovery_codes(self, raw_identity: str) -> list[str]:
        """A fresh set, shown this once; the earlier set is void."""
        identity = parse_identity(raw_identity)
        codes = recovery.generate_codes(self._policy.recovery_codes)
        now = self._clock()
        hashes = [recovery.code_hash(self._hasher, identity, c) for c in codes]
        await self._store.replace_recovery_codes(identity, hashes, now)
        await self._emit(
            "recovery_codes.generated", {"identity": identity, "count": len(codes)}, now
        )
        return codes

    async def recovery_codes_left(self, raw_identity: str) -> int:
        return await self._store.recovery_codes_left(parse_identity(raw_identity))

    async def use_recovery_code(self, raw_identity: str, typed: str) -> Approved:
        """Spend one recovery code: a token (``amr`` ``rec``) when it is one of the set."""
        identity = parse_identity(raw_identity)
        await self._count_attempt(identity, None)
        now = self._clock()
        code = recovery.normalize(typed)
        if code is None or not await self._store.use_recovery_code(
            identity, recovery.code_hash(self._hasher, identity, code), now
        ):
            await self._failed(identity, None, "invalid_code", now)
            raise InvalidCode()
        left = await self._store.recovery_codes_left(identity)
        await self._emit("recovery_code.used", {"identity": identity, "left": left}, now)
        await self._emit(
            "challenge.approved", {"identity": identity, "method": RECOVERY_METHOD}, now
        )
        token = self._signer.sign(identity, uuid.uuid4().hex, None, now, channel=RECOVERY_METHOD)
        return Approved(identity, token, RECOVERY_METHOD, recovery_codes_left=left)

    # -- shared --------------------------------------------------------------------------
    async def _count_attempt(self, identity: str, factor_id: str | None) -> None:
        now = self._clock()
        wait = await self._store.begin_attempt(identity, now, self._policy.lockout)
        if wait:
            await self._failed(identity, factor_id, "locked", now)
            raise FactorLocked(max(1, math.ceil(wait)))

    async def _failed(self, identity: str, factor_id: str | None, reason: str, now: float) -> None:
        data: dict[str, Any] = {"identity": identity, "reason": reason}
        if factor_id is not None:
            data["factorId"] = factor_id
        await self._emit("challenge.failed", data, now)

    async def _emit(self, type: str, data: dict[str, Any], now: float) -> None:
        """Queue an event on the hot store; the credential change it tells of stands
        whether or not the hot store answers."""
        try:
            await self._events.append_event(type, data, now)
        except StoreUnavailable:
            log.warning("event %s not queued: the store is unavailable", type)


def _factor_data(factor: Factor) -> dict[str, Any]:
    return {
        "identity": factor.identity,
        "factorId": factor.id,
        "factorType": factor.kind,
        "status": factor.status,
    }
