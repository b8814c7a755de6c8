"""Test phone numbers: fixed codes for app-store review and QA, never an SMS.

A test number goes through every other step (parsing, cooldown, quotas, attempt
limits, expiry): its fixed code is hashed and stored like a random one, and only
the send is skipped. The settings refuse them in production unless explicitly
allowed, since anyone who learns one can verify as that number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TestNumbers:
    __test__ = False  # not a pytest test class, despite the name

    pairs: tuple[tuple[str, str], ...] = ()
    _codes: dict[str, str] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_codes", dict(self.pairs))

    @classmethod
    def from_mapping(cls, codes: Mapping[str, str]) -> TestNumbers:
        return cls(tuple(sorted(codes.items())))

    def code_for(self, e164: str) -> str | None:
        """The fixed code for a test number, None for every real number."""
        return self._codes.get(e164)

    def __len__(self) -> int:
        return len(self._codes)

    def __repr__(self) -> str:
        # The codes are as good as passwords for these numbers: never in a repr or a log.
        return f"TestNumbers({len(self._codes)} numbers)"
