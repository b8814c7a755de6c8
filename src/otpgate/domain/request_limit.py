"""The per-IP, per-route request limit: the Node service's fixed window.

Counted in the shared store. For a well-formed request it is counted inside the
operation's own atomic step (no extra round trip); a request rejected before
that is counted on its own with ``count``, so malformed requests count too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from otpgate.domain.errors import RateLimited
from otpgate.domain.ports import OtpStore, RequestWindow, WindowHit


class RequestLimiter:
    def __init__(
        self,
        store: OtpStore,
        max_requests: int,
        window_ms: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.max_requests = max_requests
        self._window_ms = window_ms
        self._clock = clock

    def window(self, route: str, client_ip: str) -> RequestWindow:
        return RequestWindow(f"rl:{route}:{client_ip}", self.max_requests, self._window_ms)

    async def count(self, window: RequestWindow) -> WindowHit:
        return await self._store.hit_window(window, self._clock())

    async def admit(self, window: RequestWindow) -> WindowHit:
        """Count one hit, for a route whose use case does not; over the limit, raise
        RateLimited carrying the hit (for the rate-limit headers)."""
        hit = await self.count(window)
        if hit.over(window):
            exc = RateLimited(hit.reset_seconds)
            exc.window_hit = hit
            raise exc
        return hit
