"""Webhook sender: POST each SMS (and WhatsApp message or voice call) as JSON to a URL
the operator runs, signed.

It lets a team plug any SMS, WhatsApp or voice vendor in behind a small receiver,
without changing this service. The request::

    POST <SMS_WEBHOOK_URL>
    Content-Type: application/json
    Idempotency-Key: 5f0c...            (same value as in the body)
    X-Otpgate-Timestamp: 1767225600     (unix seconds)
    X-Otpgate-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>" keyed
                                 with SMS_WEBHOOK_SECRET>

    {"phoneNumber": "+12125550100", "message": "...", "idempotencyKey": "5f0c...",
     "channel": "sms"}

``channel`` is ``sms``, ``whatsapp`` or ``call`` (the message is then the text to speak,
the code spelled digit by digit); the receiver must deliver on that channel, or refuse
the request. The other fields are the same on every channel.

The idempotency key is fixed per send and repeated on every retry of it, so a
receiver that remembers keys never sends one SMS twice; that is why, unlike
SNS, a read timeout here is retried. Receivers should check the signature and
refuse timestamps more than a few minutes old.

Answers: 2xx delivered (``{"messageId": "..."}`` optional, else the key is the
id); 400/422 the number is refused; 408/409/429/5xx and network failures are
retried within the budget (Retry-After honoured), then 503; 401/403, redirects
and any other 4xx mean our configuration is wrong: 502, and readiness reports it.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC

import httpx
import orjson

from otpgate import __version__
from otpgate.delivery.health import ProblemLatch
from otpgate.delivery.retry import ProviderUnavailable, Retrier, RetryPolicy
from otpgate.domain.catalog import Rendered
from otpgate.domain.errors import (
    DeliveryFailed,
    DeliveryRejected,
    DeliveryUnavailable,
    SmsFailed,
    SmsRejected,
    SmsUnavailable,
)

# The logger name log lines carry, as before the module moved.
log = logging.getLogger("otpgate.sms.webhook")

SIGNATURE_HEADER = "x-otpgate-signature"
TIMESTAMP_HEADER = "x-otpgate-timestamp"
IDEMPOTENCY_HEADER = "idempotency-key"

_REJECTED = frozenset({400, 422})
_TRANSIENT = frozenset({408, 409, 425, 429})
_MAX_ID_BODY = 4096
# How a channel is named in what a client is told.
_CHANNEL_NAMES = {"whatsapp": "WhatsApp", "call": "voice call"}


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header value for one request; receivers recompute and compare."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """What the webhook sender needs, built from settings in wiring."""

    url: str
    secret: bytes = field(repr=False)
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class WebhookSender:
    name = "webhook"

    def __init__(self, config: WebhookConfig, clock: Callable[[], float] = time.time) -> None:
        self._url = config.url
        self._secret = config.secret
        self._clock = clock
        self._retrier = Retrier(config.retry)
        self._health = ProblemLatch(log)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout),
            follow_redirects=False,
            headers={"user-agent": f"otpgate/{__version__}"},
        )

    async def send(self, phone: str, message: str) -> str:
        return await self._send(phone, message, "sms")

    async def deliver(self, channel: str, to: str, message: Rendered) -> str:
        """A WhatsApp message or a voice call: the SMS's request with its ``channel``,
        and the SMS's outcomes told as that channel's."""
        name = _CHANNEL_NAMES.get(channel, channel)
        try:
            return await self._send(to, message.text, channel)
        except SmsRejected as exc:
            raise DeliveryRejected(f"The {name} provider rejected this phone number.") from exc
        except SmsUnavailable as exc:
            raise DeliveryUnavailable(
                f"The {name} provider is temporarily unavailable. Please try again later.",
                retry_after=exc.retry_after,
            ) from exc
        except SmsFailed as exc:
            raise DeliveryFailed(f"The {name} message could not be sent.") from exc

    async def _send(self, phone: str, message: str, channel: str) -> str:
        key = str(uuid.uuid4())
        body = orjson.dumps(
            {"phoneNumber": phone, "message": message, "idempotencyKey": key, "channel": channel}
        )
        budget = self._retrier.start()
        message_id = await budget.call(lambda: self._post(body, key), "webhook")
        self._health.ok()
        return message_id or key

    async def _post(self, body: bytes, key: str) -> str | None:
        timestamp = str(int(self._clock()))
        headers = {
            "content-type": "application/json",
            IDEMPOTENCY_HEADER: key,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.ConnectError as exc:
            raise ProviderUnavailable(f"unreachable ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            # Timeouts included: the receiver may have the request, and the idempotency
            # key lets it drop the repeat, so another attempt is safe.
            raise ProviderUnavailable(f"no answer ({type(exc).__name__})") from exc
        status = response.status_code
        if 200 <= status < 300:
            return _message_id(response)
        if status in _REJECTED:
            log.info("webhook receiver rejected the destination (HTTP %d)", status)
            raise SmsRejected()
        if status in _TRANSIENT or status >= 500:
            raise ProviderUnavailable(
                f"HTTP {status}", retry_after=_retry_after(response, self._clock())
            )
        # 401/403 (signature or secret), 404 (wrong URL), redirects, anything else:
        # every send would fail the same way until the configuration is fixed.
        self._health.fail(f"webhook: HTTP {status}", f"the receiver answered HTTP {status}")
        raise SmsFailed()

    @property
    def problem(self) -> str | None:
        return self._health.problem

    async def close(self) -> None:
        await self._client.aclose()


def _message_id(response: httpx.Response) -> str | None:
    """The receiver's id for the message, if it gave a short one in a JSON body."""
    if "json" not in response.headers.get("content-type", "") or not response.content:
        return None
    if len(response.content) > _MAX_ID_BODY:
        return None
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    value = data.get("messageId", data.get("id"))
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        text = str(value)
        if 0 < len(text) <= 200 and text.isprintable():
            return text
    return None


def _retry_after(response: httpx.Response, now: float) -> float | None:
    """Retry-After in seconds, from either of its forms (delta-seconds or an HTTP date)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
