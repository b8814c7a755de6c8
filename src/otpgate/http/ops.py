"""Endpoints for the people who run the service: readiness and metrics.

``/health`` (in app.py) is liveness and touches nothing. ``/ready`` asks the
store for one round trip and the sender whether it is known to be broken, in
bounded time, and says why when the answer is no. ``/metrics`` is the Prometheus
exposition, when it is served on the API port.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from otpgate.components import Components
from otpgate.domain.errors import StoreUnavailable
from otpgate.observability import fast_tally, metrics

log = logging.getLogger("otpgate.ready")

# Longer than a healthy store's worst case (Redis: timeout x one retry), shorter than
# a probe's usual timeout.
READY_TIMEOUT_SECONDS = 2.0

_NO_STORE = {"cache-control": "no-store"}


def _json(body: object, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, headers=_NO_STORE, media_type="application/json"
    )


async def readiness_reasons(components: Components) -> list[str]:
    """Why this instance should not get traffic now; empty when it should."""
    reasons: list[str] = []
    backend = components.http.store_backend
    try:
        await asyncio.wait_for(components.store.ping(), READY_TIMEOUT_SECONDS)
    except StoreUnavailable:
        reasons.append(f"store ({backend}) is not answering")
    except TimeoutError:
        reasons.append(f"store ({backend}) did not answer within {READY_TIMEOUT_SECONDS:g}s")
    except Exception as exc:
        reasons.append(f"store ({backend}) check failed: {type(exc).__name__}")
    sender = components.sender
    try:
        problem = sender.problem
    except Exception as exc:
        problem = f"check failed: {type(exc).__name__}"
    if problem:
        reasons.append(f"sms provider ({sender.name}): {problem}")
    for channel, other in components.other_senders():
        try:
            problem = other.problem
        except Exception as exc:
            problem = f"check failed: {type(exc).__name__}"
        if problem:
            reasons.append(f"{channel} provider ({other.name}): {problem}")
    return reasons


def ops_routes(components: Components, *, flush_tallies: bool) -> list[Route]:
    """/ready, and /metrics when served here; ``flush_tallies`` when requests are tallied."""

    async def ready(_: Request) -> Response:
        reasons = await readiness_reasons(components)
        if reasons:
            log.warning("not ready", extra={"reasons": reasons})
            return _json({"status": "not ready", "reasons": reasons}, 503)
        return _json({"status": "ready"})

    async def metrics_endpoint(_: Request) -> Response:
        if flush_tallies:
            fast_tally.flush_all()  # this worker's latest counts, on the loop thread
        # Reading every worker's files is blocking I/O: keep it off the event loop.
        body = await to_thread.run_sync(metrics.render)
        return Response(body, headers=_NO_STORE, media_type=metrics.CONTENT_TYPE)

    routes = [Route("/ready", ready, methods=["GET"])]
    if components.http.metrics_on_api_port:
        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    return routes
