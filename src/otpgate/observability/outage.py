"""One error when a dependency goes down, one line with a count when it comes back.

While Redis or an SMS provider is down every request fails the same way; a line
per request (14,605 of them in 5 s were seen) buries the one that matters and
costs the service CPU when it can least afford it. Each refused request still
writes its access line, with its machine code; this writes the outage itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class OutageLog:
    """The state of one dependency, as seen by this process."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._clock = clock
        self._lock = threading.Lock()  # the SQLite store reports from its own thread
        self._since: float | None = None
        self._failures = 0
        self._refusal: str | None = None  # the last one logged, during this outage

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, reason: str) -> None:
        """An operation failed because the dependency is unavailable (``reason``: no secrets)."""
        with self._lock:
            self._failures += 1
            if self._since is not None:
                self._log.debug("%s still unavailable: %s", self._what, reason)
                return
            self._since = self._clock()
        self._log.error(
            "%s unavailable: %s; requests that need it are refused until it answers",
            self._what,
            reason,
            extra={"dependency": self._what},
        )

    def refused(self, reason: str) -> None:
        """An operation failed because the dependency cannot be used as configured
        (``reason`` says which setting to change): counted as any failure, and logged once
        as an error of its own, even when the outage began as a plain one (a server that
        came back demanding what it did not before). A changed reason is logged again."""
        with self._lock:
            self._failures += 1
            if self._since is None:
                self._since = self._clock()
            repeated, self._refusal = self._refusal == reason, reason
        if repeated:
            self._log.debug("%s still unusable: %s", self._what, reason)
            return
        self._log.error(
            "%s cannot be used as configured: %s; requests that need it are refused"
            " until the configuration is fixed",
            self._what,
            reason,
            extra={"dependency": self._what},
        )

    def ok(self) -> None:
        """An operation succeeded: if an outage was under way, it is over."""
        if self._since is None:  # the common case, without the lock
            return
        with self._lock:
            if self._since is None:
                return
            lasted, failures = self._clock() - self._since, self._failures
            self._since, self._failures, self._refusal = None, 0, None
        self._log.warning(
            "%s available again after %.1fs; %d operation(s) failed meanwhile",
            self._what,
            lasted,
            failures,
            extra={
                "dependency": self._what,
                "outage_seconds": round(lasted, 3),
                "failed_operations": failures,
            },
        )
