"""Settings written as comma-separated ``key<sep>value`` entries.

``TEST_PHONE_NUMBERS``, ``API_KEYS`` and ``VERIFY_V2_SERVICES`` share this shape.
A bad entry is named by its position, never by its content: a value may be a secret.
"""

from __future__ import annotations

from collections.abc import Iterator


def split_pairs(text: str, sep: str, shape: str, repeated: str) -> Iterator[tuple[int, str, str]]:
    """``(index, key, value)`` for each non-blank entry in turn, both sides stripped, so
    a caller's own checks of an entry come before the next entry is read.

    ValueError when an entry lacks ``sep`` or either side ("entry N is not <shape>"),
    or repeats an earlier key ("entry N repeats <repeated>").
    """
    seen: set[str] = set()
    entries = (e.strip() for e in text.split(","))
    for index, entry in enumerate((e for e in entries if e), start=1):
        key, found, value = (part.strip() for part in entry.partition(sep))
        if not found or not key or not value:
            raise ValueError(f"entry {index} is not {shape}")
        if key in seen:
            raise ValueError(f"entry {index} repeats {repeated}")
        seen.add(key)
        yield index, key, value
