"""Reading the lock file, and comparing it with pyproject.toml and the running venv.

``python -m tests.lockfile requirements-dev.lock`` prints every installed version
that differs from the lock (``make upgrade-check`` uses it) and exits 1 if any does.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
DEV_LOCK = ROOT / "requirements-dev.lock"
RUNTIME_LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"

# A pinned line: "name==1.2.3 ; marker \" (the marker is optional).
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?:\s*;\s*(.*?))?\s*\\?$")
# Installed alongside the pins but never pinned: the installer and the project itself.
UNPINNED = frozenset({"pip", "setuptools", "wheel", "otpgate"})


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: Marker | None

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate()


def read_lock(path: Path) -> list[Pin]:
    pins = []
    for line in path.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            name, version, marker = match.groups()
            pins.append(
                Pin(canonicalize_name(name), Version(version), Marker(marker) if marker else None)
            )
    return pins


def applicable(path: Path) -> dict[str, Version]:
    """The pins that apply to this interpreter and platform, by canonical name."""
    return {pin.name: pin.version for pin in read_lock(path) if pin.applies()}


def declared(extras: tuple[str, ...] = ()) -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        requirements += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return requirements


def installed() -> dict[str, Version]:
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[canonicalize_name(name)] = Version(dist.version)
    return found


def differences(lock: Path) -> list[str]:
    """Installed versus locked, one line per package that differs."""
    pinned, present = applicable(lock), installed()
    lines = []
    for name in sorted(set(pinned) | set(present)):
        if name in UNPINNED:
            continue
        want, have = pinned.get(name), present.get(name)
        if want != have:
            lines.append(f"{name}: locked {want or '-'}, installed {have or '-'}")
    return lines


if __name__ == "__main__":
    diff = differences(Path(sys.argv[1]) if len(sys.argv) > 1 else DEV_LOCK)
    print("\n".join(diff) or "none")
    sys.exit(1 if diff else 0)
