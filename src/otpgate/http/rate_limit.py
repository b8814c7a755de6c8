"""The per-IP limit's response headers, as the Node service sends them."""

from __future__ import annotations

from otpgate.domain.ports import WindowHit


class RateLimitHeaders:
    def __init__(self, max_requests: int) -> None:
        self._max = max_requests
        self._limit_header = str(max_requests)

    def __call__(self, hit: WindowHit | None) -> dict[str, str]:
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
