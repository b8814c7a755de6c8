"""What a sender knows about its provider being broken, and log-safe error text.

A broken provider (bad credentials, a revoked permission, a wrong webhook URL)
fails every request the same way. The sender records it as ``problem`` for
readiness and logs the cause once at error level; repeats go to debug until
the problem changes or a send succeeds again.
"""

from __future__ import annotations

import logging
import re

# Phone numbers, codes and account ids are all runs of digits: none belong in a log.
_DIGITS = re.compile(r"\+?\d{4,}")


def redact(text: object, limit: int = 300) -> str:
    """Provider error text made log-safe: digit runs removed, length bounded."""
    cleaned = _DIGITS.sub("<digits>", str(text))
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


class ProblemLatch:
    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self.problem: str | None = None

    def fail(self, problem: str, cause: str) -> None:
        """Record ``problem`` (never a secret); log ``cause`` at error level once."""
        if problem == self.problem:
            self._log.debug("still failing: %s", problem)
            return
        self.problem = problem
        self._log.error("%s; readiness reports it until a send succeeds: %s", problem, cause)

    def ok(self) -> None:
        if self.problem is not None:
            self._log.warning("recovered from: %s", self.problem)
            self.problem = None
