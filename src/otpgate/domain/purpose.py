"""What a code approves: ``login``, ``transfer:8f2c``... chosen by the app.

A code verifies only with the purpose it was requested for (no purpose is a purpose
of its own): the code's hash binds it (``codes.CodeHasher``), so a mismatch is a
wrong code. The characters are few so a purpose is safe in a log line, a token and
an SMS.
"""

from __future__ import annotations

import re

PURPOSE_PATTERN = r"^[A-Za-z0-9:._-]{1,64}$"
_PURPOSE = re.compile(PURPOSE_PATTERN)


def is_purpose(value: str) -> bool:
    return _PURPOSE.match(value) is not None
