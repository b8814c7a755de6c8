"""A client's request window and one hit on it: the values both the stores and the
errors speak of, kept apart so that neither imports the other."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestWindow:
    """A client's request limit (per IP and route), counted in the same step as the
    operation it guards, so limiting costs no extra round trip."""

    key: str
    limit: int
    window_ms: int


@dataclass(frozen=True, slots=True)
class WindowHit:
    """One hit on a fixed-window counter: the count so far and when it resets."""

    count: int
    reset_after_ms: int

    def over(self, window: RequestWindow) -> bool:
        return self.count > window.limit

    @property
    def reset_seconds(self) -> int:
        """Whole seconds until the window resets (at least 1): Retry-After's value."""
        return max(1, math.ceil(self.reset_after_ms / 1000))
