"""The ``CredentialStore`` port: where factors, recovery codes and the failures that
lock an identity out are kept, durably (``otpgate.credentials`` implements it over SQL).

Each method is one atomic step on the database; every compare-and-set below holds across
every worker and host sharing it. A factor's secret crosses this port in clear: the
adapter encrypts it at rest, and nothing here ever logs it. A recovery code crosses it
only as its keyed hash. Any method raises ``CredentialsUnavailable`` when the database
does not answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from otpgate.domain.factors.values import Challenge, Entity, Factor
from otpgate.domain.limits import Lockout


@dataclass(frozen=True, slots=True)
class ChallengePage:
    """Which challenges a list shows: of one factor or all, in one status or any
    (``expired``: pending past ``expires_at`` at ``now``), oldest or newest first."""

    offset: int
    limit: int
    now: float
    factor_id: str | None = None
    status: Literal["pending", "approved", "expired", "denied"] | None = None
    newest_first: bool = False


class CredentialStore(Protocol):
    async def add_factor(self, factor: Factor, secret: bytes) -> None:
        """Keep a new factor and its secret."""

    async def factors(self, identity: str) -> list[Factor]:
        """The identity's factors, oldest first; never a secret."""

    async def factor_with_secret(
        self, identity: str, factor_id: str
    ) -> tuple[Factor, bytes] | None:
        """The factor and its secret, or None when the identity has no such factor."""

    async def accept_step(
        self, identity: str, factor_id: str, step: int, now: float, *, activate: bool
    ) -> bool:
        """Record ``step`` as the factor's last accepted one, if it is later than the one
        recorded, and clear the identity's failures, in one step. ``activate``: only
        while the factor is ``unverified``, which turns it ``verified``; otherwise only
        while it is ``verified``. True for exactly one caller per step."""

    async def delete_factor(self, identity: str, factor_id: str) -> bool:
        """Remove the factor now; False when there was none."""

    async def replace_recovery_codes(
        self, identity: str, code_hashes: Sequence[bytes], now: float
    ) -> None:
        """The identity's recovery codes become these (the earlier set is void)."""

    async def use_recovery_code(self, identity: str, code_hash: bytes, now: float) -> bool:
        """Spend the unused code with this hash and clear the identity's failures, in one
        step; True for exactly one caller."""

    async def recovery_codes_left(self, identity: str) -> int:
        """How many of the identity's recovery codes are unused."""

    async def begin_attempt(self, identity: str, now: float, lockout: Lockout) -> int:
        """Count one failure for the identity *before* any comparison (a success clears
        it), unless ``lockout`` refuses the attempt: then nothing is counted and the
        answer is the seconds to wait (0: counted, go on)."""

    # -- entities and challenges (the Twilio Verify compatible routes) --------------------
    async def add_entity(self, entity: Entity) -> Entity:
        """Keep a new entity; the one already kept under its service and name, if any."""

    async def entity(self, service: str, name: str) -> Entity | None: ...

    async def entities(self, service: str, offset: int, limit: int) -> list[Entity]:
        """The service's entities, oldest first, ``limit`` of them from ``offset``."""

    async def delete_entity(self, entity: Entity) -> bool:
        """Remove the entity, and every factor, challenge and recovery code of its
        identity, in one step; False when there was none."""

    async def add_challenge(self, challenge: Challenge) -> None: ...

    async def challenge(self, identity: str, challenge_id: str) -> Challenge | None: ...

    async def challenges(
        self,
        identity: str,
        page: ChallengePage,
    ) -> list[Challenge]:
        """The identity's challenges as ``page`` selects them."""

    async def approve_challenge(self, identity: str, challenge_id: str, now: float) -> bool:
        """A pending challenge not yet expired turns ``approved``; True for exactly one
        caller."""

    async def ping(self) -> None:
        """Raise CredentialsUnavailable when the database does not answer."""

    async def close(self) -> None: ...
