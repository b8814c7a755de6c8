"""``CredentialStore`` over SQL (SQLAlchemy Core, async): SQLite or PostgreSQL.

Each method is one transaction. The compare-and-sets are single ``UPDATE ... WHERE``
statements whose row count says who won: atomic on both databases, with no lock held
across a round trip. The lockout's step reads the identity's failures and writes them
back only if they are still what it read, and tries again when another check got there
first. Secrets are encrypted before they are written and decrypted after they are read
(``cipher.py``); a database that does not answer is ``CredentialsUnavailable``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from otpgate.credentials.cipher import CipherError, SecretCipher
from otpgate.credentials.tables import (
    challenges,
    entities,
    factors,
    identity_failures,
    recovery_codes,
)
from otpgate.domain.factors.errors import CredentialsUnavailable
from otpgate.domain.factors.ports import ChallengePage
from otpgate.domain.factors.values import Challenge, Entity, Factor, TotpConfig
from otpgate.domain.limits import Lockout

log = logging.getLogger(__name__)

# How many times the lockout's read-then-write is tried against concurrent checks.
ATTEMPT_TRIES = 20


def _context(factor_id: str, identity: str) -> bytes:
    return f"{factor_id}\x00{identity}".encode()


class SqlCredentialStore:
    def __init__(self, engine: AsyncEngine, cipher: SecretCipher) -> None:
        self._engine = engine
        self._cipher = cipher

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as connection:
                yield connection
        except IntegrityError:
            raise
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise CredentialsUnavailable() from exc

    # -- factors -------------------------------------------------------------------------
    async def add_factor(self, factor: Factor, secret: bytes) -> None:
        sealed = self._cipher.encrypt(secret, _context(factor.id, factor.identity))
        config = factor.config
        async with self._tx() as db:
            await db.execute(
                insert(factors).values(
                    id=factor.id,
                    identity=factor.identity,
                    kind=factor.kind,
                    status=factor.status,
                    name=factor.name,
                    secret=sealed,
                    digits=config.digits,
                    period=config.period,
                    algorithm=config.algorithm,
                    skew=config.skew,
                    last_step=factor.last_step,
                    created_at=factor.created_at,
                    verified_at=factor.verified_at,
                )
            )

    async def factors(self, identity: str) -> list[Factor]:
        async with self._tx() as db:
            rows = await db.execute(
                select(factors)
                .where(factors.c.identity == identity)
                .order_by(factors.c.created_at, factors.c.id)
            )
            return [_factor(row._mapping) for row in rows]

    async def factor_with_secret(
        self, identity: str, factor_id: str
    ) -> tuple[Factor, bytes] | None:
        async with self._tx() as db:
            row = (
                await db.execute(
                    select(factors).where(factors.c.id == factor_id, factors.c.identity == identity)
                )
            ).first()
        if row is None:
            return None
        try:
            secret = self._cipher.decrypt(row.secret, _context(factor_id, identity))
        except CipherError as exc:
            # Configuration, not the caller: a key was dropped from FACTOR_ENCRYPTION_KEYS
            # while a secret was still under it.
            log.error("factor %s: secret cannot be read: %s", factor_id, exc)
            raise CredentialsUnavailable() from None
        return _factor(row._mapping), secret

    async def accept_step(
        self, identity: str, factor_id: str, step: int, now: float, *, activate: bool
    ) -> bool:
        values: dict[str, Any] = {"last_step": step}
        if activate:
            values.update(status="verified", verified_at=now)
        async with self._tx() as db:
            result = await db.execute(
                update(factors)
                .where(
                    factors.c.id == factor_id,
                    factors.c.identity == identity,
                    factors.c.status == ("unverified" if activate else "verified"),
                    or_(factors.c.last_step.is_(None), factors.c.last_step < step),
                )
                .values(**values)
            )
            return await _won(db, result, identity)

    async def delete_factor(self, identity: str, factor_id: str) -> bool:
        async with self._tx() as db:
            result = await db.execute(
                delete(factors).where(factors.c.id == factor_id, factors.c.identity == identity)
            )
            return result.rowcount == 1

    # -- recovery codes ------------------------------------------------------------------
    async def replace_recovery_codes(
        self, identity: str, code_hashes: Sequence[bytes], now: float
    ) -> None:
        async with self._tx() as db:
            await db.execute(delete(recovery_codes).where(recovery_codes.c.identity == identity))
            if code_hashes:
                await db.execute(
                    insert(recovery_codes),
                    [
                        {"identity": identity, "code_hash": h, "created_at": now}
                        for h in code_hashes
                    ],
                )

    async def use_recovery_code(self, identity: str, code_hash: bytes, now: float) -> bool:
        async with self._tx() as db:
            result = await db.execute(
                update(recovery_codes)
                .where(
                    recovery_codes.c.identity == identity,
                    recovery_codes.c.code_hash == code_hash,
                    recovery_codes.c.used_at.is_(None),
                )
                .values(used_at=now)
            )
            return await _won(db, result, identity)

    async def recovery_codes_left(self, identity: str) -> int:
        async with self._tx() as db:
            count = await db.scalar(
                select(func.count())
                .select_from(recovery_codes)
                .where(recovery_codes.c.identity == identity, recovery_codes.c.used_at.is_(None))
            )
            return int(count or 0)

    # -- the lockout ---------------------------------------------------------------------
    async def begin_attempt(self, identity: str, now: float, lockout: Lockout) -> int:
        for _ in range(ATTEMPT_TRIES):
            async with self._tx() as db:
                row = (
                    await db.execute(
                        select(
                            identity_failures.c.failures, identity_failures.c.last_failure_at
                        ).where(identity_failures.c.identity == identity)
                    )
                ).first()
                if row is None:
                    if await _first_failure(db, identity, now):
                        return 0
                    continue  # another check counted the first: read it again
                count, last = int(row.failures), float(row.last_failure_at)
                if now - last >= lockout.memory_seconds:
                    count = 0  # forgotten: the record lapsed
                wait = lockout.wait_seconds(count)
                if wait and last + wait > now:
                    return max(1, int(last + wait - now + 0.999))
                result = await db.execute(
                    update(identity_failures)
                    .where(
                        identity_failures.c.identity == identity,
                        identity_failures.c.failures == row.failures,
                        identity_failures.c.last_failure_at == row.last_failure_at,
                    )
                    .values(failures=count + 1, last_failure_at=now)
                )
                if result.rowcount == 1:
                    return 0
        raise CredentialsUnavailable()  # contention that never settled: try again later

    async def failures(self, identity: str) -> tuple[int, float | None]:
        """The identity's consecutive failures and when the last was (for operators)."""
        async with self._tx() as db:
            row = (
                await db.execute(
                    select(identity_failures).where(identity_failures.c.identity == identity)
                )
            ).first()
        return (int(row.failures), float(row.last_failure_at)) if row else (0, None)

    # -- entities and challenges ---------------------------------------------------------
    async def add_entity(self, entity: Entity) -> Entity:
        try:
            async with self._tx() as db:
                await db.execute(insert(entities).values(**asdict(entity)))
            return entity
        except IntegrityError:
            kept = await self.entity(entity.service, entity.name)
            if kept is None:  # deleted between the two: the caller may try again
                raise CredentialsUnavailable() from None
            return kept

    async def entity(self, service: str, name: str) -> Entity | None:
        async with self._tx() as db:
            row = (
                await db.execute(
                    select(entities).where(entities.c.service == service, entities.c.name == name)
                )
            ).first()
        return Entity(**row._mapping) if row else None

    async def entities(self, service: str, offset: int, limit: int) -> list[Entity]:
        async with self._tx() as db:
            rows = await db.execute(
                select(entities)
                .where(entities.c.service == service)
                .order_by(entities.c.created_at, entities.c.id)
                .offset(offset)
                .limit(limit)
            )
            return [Entity(**row._mapping) for row in rows]

    async def delete_entity(self, entity: Entity) -> bool:
        identity = entity.identity
        async with self._tx() as db:
            result = await db.execute(delete(entities).where(entities.c.id == entity.id))
            if result.rowcount != 1:
                return False
            for table in (factors, challenges, recovery_codes, identity_failures):
                await db.execute(delete(table).where(table.c.identity == identity))
            return True

    async def add_challenge(self, challenge: Challenge) -> None:
        async with self._tx() as db:
            await db.execute(insert(challenges).values(**asdict(challenge)))

    async def challenge(self, identity: str, challenge_id: str) -> Challenge | None:
        async with self._tx() as db:
            row = (
                await db.execute(
                    select(challenges).where(
                        challenges.c.id == challenge_id, challenges.c.identity == identity
                    )
                )
            ).first()
        return Challenge(**row._mapping) if row else None

    async def challenges(self, identity: str, page: ChallengePage) -> list[Challenge]:
        query = select(challenges).where(challenges.c.identity == identity)
        if page.factor_id is not None:
            query = query.where(challenges.c.factor_id == page.factor_id)
        if page.status == "expired":
            query = query.where(
                challenges.c.status == "pending", challenges.c.expires_at <= page.now
            )
        elif page.status == "pending":
            query = query.where(
                challenges.c.status == "pending", challenges.c.expires_at > page.now
            )
        elif page.status is not None:
            query = query.where(challenges.c.status == page.status)
        order: tuple[Any, ...] = (challenges.c.created_at, challenges.c.id)
        if page.newest_first:
            order = (challenges.c.created_at.desc(), challenges.c.id.desc())
        async with self._tx() as db:
            rows = await db.execute(query.order_by(*order).offset(page.offset).limit(page.limit))
            return [Challenge(**row._mapping) for row in rows]

    async def approve_challenge(self, identity: str, challenge_id: str, now: float) -> bool:
        pending = (
            challenges.c.id == challenge_id,
            challenges.c.identity == identity,
            challenges.c.status == "pending",
            challenges.c.expires_at > now,
        )
        approve = update(challenges).where(*pending)
        async with self._tx() as db:
            result = await db.execute(
                approve.values(status="approved", updated_at=now, responded_at=now)
            )
            return result.rowcount == 1

    async def ping(self) -> None:
        async with self._tx() as db:
            await db.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self._engine.dispose()


async def _won(db: AsyncConnection, result: Any, identity: str) -> bool:
    """Whether a compare-and-set changed its row; if it did, a success: the identity's
    failures are forgotten in the same transaction."""
    if result.rowcount != 1:
        return False
    await db.execute(delete(identity_failures).where(identity_failures.c.identity == identity))
    return True


async def _first_failure(db: AsyncConnection, identity: str, now: float) -> bool:
    """Insert the identity's first failure; False when a concurrent check inserted it
    first (the savepoint keeps this transaction usable on PostgreSQL)."""
    try:
        async with db.begin_nested():
            await db.execute(
                insert(identity_failures).values(identity=identity, failures=1, last_failure_at=now)
            )
    except IntegrityError:
        return False
    return True


def _factor(row: Any) -> Factor:
    return Factor(
        id=row["id"],
        identity=row["identity"],
        kind=row["kind"],
        status=row["status"],
        config=TotpConfig(
            digits=row["digits"],
            period=row["period"],
            algorithm=row["algorithm"],
            skew=row["skew"],
        ),
        created_at=row["created_at"],
        verified_at=row["verified_at"],
        last_step=row["last_step"],
        name=row["name"],
    )
