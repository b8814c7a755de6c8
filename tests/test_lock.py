"""The lock files agree with pyproject.toml, and the venv runs exactly what is locked."""

from __future__ import annotations

from tests.lockfile import (
    DEV_LOCK,
    RUNTIME_LOCK,
    applicable,
    declared,
    differences,
    read_lock,
)


def test_every_declared_dependency_is_locked_within_its_bounds() -> None:
    pinned = applicable(DEV_LOCK)
    for requirement in declared(("dev",)):
        name = requirement.name.lower().replace("_", "-")
        assert name in pinned, f"{requirement} is not in {DEV_LOCK.name}: run `make lock`"
        assert pinned[name] in requirement.specifier, (
            f"{DEV_LOCK.name} pins {name}=={pinned[name]}, outside {requirement}: run `make lock`"
        )


def test_runtime_lock_is_the_dev_lock_without_the_dev_tools() -> None:
    runtime = {(p.name, p.version, str(p.marker)) for p in read_lock(RUNTIME_LOCK)}
    dev = {(p.name, p.version, str(p.marker)) for p in read_lock(DEV_LOCK)}
    assert runtime <= dev, f"pins that differ: {sorted(runtime - dev)}"
    pinned = applicable(RUNTIME_LOCK)
    for requirement in declared():
        assert requirement.name.lower() in pinned, f"{requirement} missing from requirements.lock"


def test_installed_packages_are_exactly_the_locked_ones() -> None:
    # `make` builds the venv from the lock; a package added or upgraded by hand shows here.
    assert differences(DEV_LOCK) == []
