"""The per-IP, per-route request limit, with the Node service's headers.

A fixed window counted in the shared store. For a well-formed request it is
counted inside the operation's own atomic step (no extra round trip); a request
rejected before that is counted on its own, so malformed requests count too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from otpgate.store.base import OtpStore, RequestWindow, WindowHit


class RouteRateLimiter:
    def __init__(
        self,
        store: OtpStore,
        max_requests: int,
        window_ms: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._max = max_requests
        self._window_ms = window_ms
        self._clock = clock
        self._limit_header = str(max_requests)

    def window(self, route: str, client_ip: str) -> RequestWindow:
        return RequestWindow(f"rl:{route}:{client_ip}", self._max, self._window_ms)

    async def count(self, window: RequestWindow) -> WindowHit:
        return await self._store.hit_window(window, self._clock())

    def headers(self, hit: WindowHit | None) -> dict[str, str]:
        if hit is None:
            return {}
        reset = str(hit.reset_seconds)
        headers = {
            "x-ratelimit-limit": self._limit_header,
            "x-ratelimit-remaining": str(max(0, self._max - hit.count)),
            "x-ratelimit-reset": reset,
        }
        if hit.count > self._max:
            headers["retry-after"] = reset
        return headers
