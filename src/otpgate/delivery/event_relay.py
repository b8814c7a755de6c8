"""Deliver queued events to ``EVENT_WEBHOOK_URL``, signed, in order, at least once.

The stores queue events in the same step as the change they tell of, so none is
lost when the receiver is down or otpgate restarts: this relay only reads the
queue. Every worker of every instance runs one; the store's lease lets one
deliver at a time, so events arrive in the order they happened. An event is
acknowledged after a 2xx; until then it is retried with back-off and the ones
behind it wait. A receiver may see an event twice (a crash between its 2xx and
the acknowledgement): it de-duplicates on the ``id``.

The request, as the SMS webhook's::

    POST <EVENT_WEBHOOK_URL>
    Idempotency-Key: <event id>
    X-Otpgate-Timestamp: 1767225600
    X-Otpgate-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">

    {"id": "...", "type": "verification.approved", "createdAt": "...Z", "data": {...}}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import orjson

from otpgate.delivery.webhook import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from otpgate.domain.errors import StoreUnavailable
from otpgate.domain.ports import Event, EventLog

# The logger name log lines carry, as before the module moved.
log = logging.getLogger("otpgate.events.relay")


@dataclass(frozen=True, slots=True)
class RelayConfig:
    url: str
    secret: bytes = field(repr=False)
    timeout: float = 5.0
    lease_seconds: float = 3.0  # another worker takes over this long after one dies
    idle_seconds: float = 0.5  # how often an idle relay looks for new events
    batch: int = 50
    max_backoff_seconds: float = 30.0


def event_body(event: Event) -> bytes:
    created = datetime.fromtimestamp(event.at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return orjson.dumps(
        {"id": event.id, "type": event.type, "createdAt": created, "data": event.data}
    )


class EventRelay:
    def __init__(
        self,
        events: EventLog,
        config: RelayConfig,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._events = events
        self._config = config
        self._clock = clock
        self._owner = uuid.uuid4().hex  # this worker, for the lease
        self._client = httpx.AsyncClient(timeout=config.timeout, transport=transport)
        self._task: asyncio.Task[None] | None = None
        self._backoff = 0.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="otpgate-event-relay")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._client.aclose()

    async def _run(self) -> None:
        while True:
            try:
                delivered_all = await self.deliver_once()
            except StoreUnavailable:
                delivered_all = False
            except Exception:
                log.exception("event relay failed; retrying")
                delivered_all = False
            if delivered_all:
                self._backoff = 0.0
                await asyncio.sleep(self._config.idle_seconds)
            else:
                self._backoff = min(max(0.2, self._backoff * 2), self._config.max_backoff_seconds)
                await asyncio.sleep(self._backoff)

    async def deliver_once(self) -> bool:
        """One round: queue expired verifications, then deliver what is queued, in
        order, until one fails. True when nothing was left undelivered."""
        config, now = self._config, self._clock()
        await self._events.sweep_expired(now, config.batch)
        batch = await self._events.next_events(self._owner, now, config.lease_seconds, config.batch)
        if batch is None:
            return True  # another worker delivers
        for event in batch:
            if not await self._post(event):
                return False
            await self._events.ack_event(self._owner, event.id)
        return True

    async def _post(self, event: Event) -> bool:
        body = event_body(event)
        timestamp = str(int(self._clock()))
        headers = {
            "content-type": "application/json",
            IDEMPOTENCY_HEADER: event.id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._config.secret, timestamp, body),
        }
        try:
            answer = await self._client.post(self._config.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("event receiver unreachable: %s", type(exc).__name__)
            return False
        if 200 <= answer.status_code < 300:
            return True
        log.warning("event receiver answered %d; retrying", answer.status_code)
        return False
