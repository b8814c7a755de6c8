"""The per-IP, per-route request limit, with the Node service's headers.

A fixed window counted in the shared store (one atomic round trip), checked
before the body is read so that malformed requests count too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from otpgate.store.base import OtpStore


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    headers: dict[str, str]
    retry_after: int


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

    async def hit(self, route: str, client_ip: str) -> RateDecision:
        hit = await self._store.hit_window(
            f"rl:{route}:{client_ip}", self._window_ms, self._clock()
        )
        reset = max(1, math.ceil(hit.reset_after_ms / 1000))
        headers = {
            "x-ratelimit-limit": str(self._max),
            "x-ratelimit-remaining": str(max(0, self._max - hit.count)),
            "x-ratelimit-reset": str(reset),
        }
        if hit.count > self._max:
            headers["retry-after"] = str(reset)
            return RateDecision(False, headers, reset)
        return RateDecision(True, headers, 0)
