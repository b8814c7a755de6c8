"""The credential store's contract, the same tests on SQLite and on PostgreSQL (each in
a database of its own); the secrets at rest; and the schema's migrations."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, select, text

from otpgate.cli import main
from otpgate.credentials.cipher import SecretCipher
from otpgate.credentials.engine import create_engine
from otpgate.credentials.schema import alembic_config as schema_config
from otpgate.credentials.schema import head_revision, schema_state
from otpgate.credentials.store import SqlCredentialStore
from otpgate.credentials.tables import factors as factors_table
from otpgate.credentials.tables import metadata
from otpgate.domain.factors.errors import CredentialsUnavailable
from otpgate.domain.factors.ports import ChallengePage
from otpgate.domain.factors.values import (
    Challenge,
    Entity,
    Factor,
    TotpConfig,
    new_challenge_id,
    new_entity_id,
    new_factor_id,
)
from otpgate.domain.limits import Lockout
from otpgate.wiring import SchemaBehind, check_credentials
from tests.conftest import make_settings

OLD_KEY = {"k1": os.urandom(32)}
NEW_KEY = {"k2": os.urandom(32)}
SECRET = b"12345678901234567890"
LOCKOUT = Lockout(threshold=3, base_seconds=60, max_seconds=3600, hard_cap=10)


def _factor(identity: str = "user-1", status: str = "unverified") -> Factor:
    return Factor(
        id=new_factor_id(),
        identity=identity,
        kind="totp",
        status=status,  # type: ignore[arg-type]
        config=TotpConfig(),
        created_at=1000.0,
        name="Phone",
    )


def _store(url: str, keys: dict[str, bytes] = OLD_KEY) -> SqlCredentialStore:
    return SqlCredentialStore(create_engine(url), SecretCipher(keys))


@pytest.fixture
async def store(migrated_url: str) -> AsyncIterator[SqlCredentialStore]:
    s = _store(migrated_url)
    yield s
    await s.close()


async def test_a_factor_keeps_its_secret_and_lists_without_it(
    store: SqlCredentialStore,
) -> None:
    factor = _factor()
    await store.add_factor(factor, SECRET)
    assert await store.factors("user-1") == [factor]
    assert await store.factors("user-2") == []
    assert await store.factor_with_secret("user-1", factor.id) == (factor, SECRET)
    assert await store.factor_with_secret("user-2", factor.id) is None


async def test_each_step_is_accepted_once_and_never_an_earlier_one(
    store: SqlCredentialStore,
) -> None:
    factor = _factor()
    await store.add_factor(factor, SECRET)
    # Not verified yet: only an activation takes a step.
    assert not await store.accept_step("user-1", factor.id, 10, 1.0, activate=False)
    results = await asyncio.gather(
        *(store.accept_step("user-1", factor.id, 10, 1.0, activate=True) for _ in range(8))
    )
    assert results.count(True) == 1
    assert not await store.accept_step("user-1", factor.id, 11, 1.0, activate=True)
    assert not await store.accept_step("user-1", factor.id, 10, 1.0, activate=False)
    assert not await store.accept_step("user-1", factor.id, 9, 1.0, activate=False)
    results = await asyncio.gather(
        *(store.accept_step("user-1", factor.id, 12, 1.0, activate=False) for _ in range(8))
    )
    assert results.count(True) == 1
    listed = (await store.factors("user-1"))[0]
    assert (listed.status, listed.last_step, listed.verified_at) == ("verified", 12, 1.0)


async def test_deleting_a_factor_is_immediate(store: SqlCredentialStore) -> None:
    factor = _factor()
    await store.add_factor(factor, SECRET)
    assert not await store.delete_factor("user-2", factor.id)
    assert await store.delete_factor("user-1", factor.id)
    assert await store.factor_with_secret("user-1", factor.id) is None
    assert not await store.delete_factor("user-1", factor.id)


async def test_recovery_codes_are_used_once_and_replaced_as_a_set(
    store: SqlCredentialStore,
) -> None:
    first = [bytes([i]) * 32 for i in range(3)]
    await store.replace_recovery_codes("user-1", first, 1.0)
    assert await store.recovery_codes_left("user-1") == 3
    results = await asyncio.gather(
        *(store.use_recovery_code("user-1", first[0], 2.0) for _ in range(6))
    )
    assert results.count(True) == 1
    assert not await store.use_recovery_code("user-2", first[1], 2.0)
    assert await store.recovery_codes_left("user-1") == 2
    second = [bytes([i + 10]) * 32 for i in range(2)]
    await store.replace_recovery_codes("user-1", second, 3.0)
    assert not await store.use_recovery_code("user-1", first[1], 4.0)
    assert await store.use_recovery_code("user-1", second[1], 4.0)
    assert await store.recovery_codes_left("user-1") == 1


async def test_failures_lock_an_identity_out_and_a_success_clears_them(
    store: SqlCredentialStore,
) -> None:
    now = 10_000.0
    # Counted before the comparison, concurrently: never more than one per attempt.
    waits = await asyncio.gather(*(store.begin_attempt("u", now, LOCKOUT) for _ in range(3)))
    assert waits == [0, 0, 0]
    assert await store.failures("u") == (3, now)
    assert await store.begin_attempt("u", now + 1, LOCKOUT) == 59  # locked, not counted
    assert await store.failures("u") == (3, now)
    assert await store.begin_attempt("u", now + 60, LOCKOUT) == 0
    assert await store.begin_attempt("u", now + 61, LOCKOUT) == 119  # 4 failures: 2 minutes
    assert await store.begin_attempt("other", now, LOCKOUT) == 0
    # A recovery code used (or a step accepted) clears the identity's failures.
    await store.replace_recovery_codes("u", [b"h" * 32], now)
    assert await store.use_recovery_code("u", b"h" * 32, now + 200)
    assert await store.failures("u") == (0, None)


async def test_a_secret_is_only_ciphertext_at_rest_and_survives_a_key_rotation(
    migrated_url: str, tmp_path: Path
) -> None:
    old = _store(migrated_url, OLD_KEY)
    factor = _factor()
    await old.add_factor(factor, SECRET)
    await old.close()
    engine = create_engine(migrated_url)
    async with engine.connect() as db:
        stored = (await db.execute(select(factors_table.c.secret))).scalar_one()
        dump = str((await db.execute(select(factors_table))).all())
    await engine.dispose()
    assert stored.startswith("gcm1:k1:")
    b32 = base64.b32encode(SECRET).decode().rstrip("=")
    for shown in (SECRET.decode(), b32, SECRET.hex(), base64.b64encode(SECRET).decode()):
        assert shown not in dump
    if migrated_url.startswith("sqlite"):
        raw = Path(migrated_url.removeprefix("sqlite:///")).read_bytes()
        wal = Path(migrated_url.removeprefix("sqlite:///") + "-wal")
        raw += wal.read_bytes() if wal.exists() else b""
        assert SECRET not in raw and b32.encode() not in raw
        assert factor.id.encode() in raw  # the file is readable: the secret is not in it
    # Rotation: the new key first encrypts, the old one second still decrypts.
    rotated = _store(migrated_url, {**NEW_KEY, **OLD_KEY})
    assert await rotated.factor_with_secret("user-1", factor.id) == (factor, SECRET)
    newer = _factor()
    await rotated.add_factor(newer, SECRET)
    await rotated.close()
    engine = create_engine(migrated_url)
    async with engine.connect() as db:
        kinds = (
            await db.execute(select(factors_table.c.secret).where(factors_table.c.id == newer.id))
        ).scalar_one()
    await engine.dispose()
    assert kinds.startswith("gcm1:k2:")
    # Without the old key, the old factor cannot be read (and says so, as an outage).
    new_only = _store(migrated_url, NEW_KEY)
    with pytest.raises(CredentialsUnavailable):
        await new_only.factor_with_secret("user-1", factor.id)
    assert await new_only.factor_with_secret("user-1", newer.id) == (newer, SECRET)
    await new_only.close()


async def test_a_secret_moved_to_another_row_does_not_decrypt(store: SqlCredentialStore) -> None:
    mine, theirs = _factor("user-1"), _factor("user-2")
    await store.add_factor(mine, SECRET)
    await store.add_factor(theirs, b"another secret of 20")
    engine = store._engine
    async with engine.begin() as db:
        sealed = (
            await db.execute(select(factors_table.c.secret).where(factors_table.c.id == mine.id))
        ).scalar_one()
        await db.execute(
            factors_table.update().where(factors_table.c.id == theirs.id).values(secret=sealed)
        )
    with pytest.raises(CredentialsUnavailable):
        await store.factor_with_secret("user-2", theirs.id)


async def test_the_database_does_not_answer(tmp_path: Path) -> None:
    down = _store("postgresql://postgres@127.0.0.1:1/none")
    with pytest.raises(CredentialsUnavailable):
        await down.factors("user-1")
    await down.close()


# -- migrations ---------------------------------------------------------------------------
async def test_the_migrations_make_the_tables_the_store_uses(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    try:
        state = await schema_state(engine)
        assert (state.current, state.behind) == (head_revision(), False)
        async with engine.connect() as db:
            for table in metadata.sorted_tables:
                columns = {c.name for c in table.columns}
                row = await db.execute(text(f"SELECT * FROM {table.name} WHERE 1 = 0"))
                assert set(row.keys()) == columns
    finally:
        await engine.dispose()


def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> None:
    for name, value in {
        "DATABASE_URL": database_url,
        "SQLITE_PATH": str(tmp_path / "otpgate.sqlite3"),
        "SEND_JOURNAL_DIR": str(tmp_path / "sends"),
        "OTP_HASH_SECRET_FILE": str(tmp_path / "hash-secret"),
        "TOKEN_DEV_KEY_FILE": str(tmp_path / "token.pem"),
        "FACTOR_ENCRYPTION_KEY_FILE": str(tmp_path / "factor-key"),
        "SMS_PROVIDER": "console",
        "APP_ENV": "development",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout's


def test_migrate_brings_an_empty_database_to_this_version(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _env(monkeypatch, tmp_path, database_url)
    assert main(["migrate"]) == 0
    assert f"schema at {head_revision()}" in capsys.readouterr().out
    assert main(["migrate"]) == 0  # again: nothing to do
    settings = make_settings(tmp_path, database_url=database_url)
    check_credentials(settings)  # serve's check passes


def test_serve_refuses_a_schema_that_is_behind_naming_the_command(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    with pytest.raises(SchemaBehind, match="run `otpgate migrate`"):
        check_credentials(settings)
    _env(monkeypatch, tmp_path, database_url)
    assert main(["serve", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "schema is behind" in err and "otpgate migrate" in err
    # Opted in, start-up migrates instead.
    check_credentials(
        make_settings(tmp_path, database_url=database_url, database_migrate_on_start=True)
    )
    check_credentials(settings)


def test_migrate_takes_a_database_at_0001_to_this_version_keeping_its_factors(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A database from before entities and challenges: `otpgate migrate` adds their
    tables, and its factors stay."""

    async def at_0001() -> Factor:
        engine = create_engine(database_url)

        def upgrade(connection: Connection) -> None:
            config = schema_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")

        async with engine.begin() as connection:
            await connection.run_sync(upgrade)
        store = SqlCredentialStore(engine, SecretCipher(OLD_KEY))
        factor = _factor("user-old")
        await store.add_factor(factor, SECRET)
        await store.close()
        return factor

    factor = asyncio.run(at_0001())
    _env(monkeypatch, tmp_path, database_url)
    monkeypatch.setenv("FACTOR_ENCRYPTION_KEY_FILE", str(tmp_path / "unused-key"))
    assert main(["migrate"]) == 0
    assert f"schema at {head_revision()}" in capsys.readouterr().out

    async def after() -> None:
        store = _store(database_url)
        try:
            assert [f.id for f in await store.factors("user-old")] == [factor.id]
            entity = Entity("YE" + "0" * 32, "VA" + "1" * 32, "user-old", "user-old", 1.0)
            assert await store.add_entity(entity) == entity
        finally:
            await store.close()

    asyncio.run(after())


# -- entities and challenges --------------------------------------------------------------
def _entity(name: str = "alice", service: str = "VA" + "1" * 32) -> Entity:
    return Entity(new_entity_id(), service, name, f"{service}:{name}", 1000.0)


def _challenge(identity: str, factor_id: str, created_at: float) -> Challenge:
    return Challenge(
        new_challenge_id(), identity, factor_id, "pending", created_at, created_at, 2000.0
    )


async def test_an_entity_is_made_once_per_service_and_name(store: SqlCredentialStore) -> None:
    first = _entity()
    assert await store.add_entity(first) == first
    assert await store.add_entity(_entity()) == first  # the same name: the one kept
    other = _entity(service="VA" + "2" * 32)
    assert await store.add_entity(other) == other
    assert await store.entity(first.service, "alice") == first
    assert await store.entity(first.service, "bob") is None
    more = [_entity(f"user-{n}") for n in range(3)]
    for entity in more:
        await store.add_entity(entity)
    listed = await store.entities(first.service, 1, 2)
    assert len(listed) == 2 and other not in listed


async def test_deleting_an_entity_takes_its_factors_and_challenges(
    store: SqlCredentialStore,
) -> None:
    entity, bystander = _entity(), _entity("bob")
    for e in (entity, bystander):
        await store.add_entity(e)
    factor, kept_factor = _factor(entity.identity), _factor(bystander.identity)
    await store.add_factor(factor, SECRET)
    await store.add_factor(kept_factor, SECRET)
    await store.add_challenge(_challenge(entity.identity, factor.id, 1000.0))
    kept = _challenge(bystander.identity, kept_factor.id, 1000.0)
    await store.add_challenge(kept)
    assert await store.delete_entity(entity)
    assert not await store.delete_entity(entity)
    assert await store.entity(entity.service, entity.name) is None
    assert await store.factors(entity.identity) == []
    page = ChallengePage(0, 10, 1500.0)
    assert await store.challenges(entity.identity, page) == []
    assert await store.challenges(bystander.identity, page) == [kept]
    assert [f.id for f in await store.factors(bystander.identity)] == [kept_factor.id]


async def test_challenges_are_approved_once_and_listed_as_asked(
    store: SqlCredentialStore,
) -> None:
    identity = "VA" + "1" * 32 + ":alice"
    first, second = (
        _challenge(identity, "YF" + "a" * 32, 1000.0),
        _challenge(identity, "YF" + "b" * 32, 1001.0),
    )
    for c in (first, second):
        await store.add_challenge(c)
    assert await store.approve_challenge(identity, first.id, 1500.0)
    assert not await store.approve_challenge(identity, first.id, 1500.0)
    assert not await store.approve_challenge(identity, second.id, 2500.0)  # expired
    approved = await store.challenge(identity, first.id)
    assert approved is not None
    assert (approved.status, approved.responded_at) == ("approved", 1500.0)
    assert await store.challenge("someone-else", first.id) is None

    async def ids(**kw: object) -> list[str]:
        page = ChallengePage(**{"offset": 0, "limit": 10, "now": 1500.0, **kw})  # type: ignore[arg-type]
        return [c.id for c in await store.challenges(identity, page)]

    assert await ids() == [first.id, second.id]
    assert await ids(newest_first=True) == [second.id, first.id]
    assert await ids(status="approved") == [first.id]
    assert await ids(status="pending") == [second.id]
    assert await ids(status="expired", now=2500.0) == [second.id]
    assert await ids(status="denied") == []
    assert await ids(factor_id=second.factor_id) == [second.id]
    assert await ids(offset=1, limit=1) == [second.id]
