"""AWS SNS sender: aiobotocore for configuration, a lean path for Publish.

The aiobotocore client resolves what AWS configuration means: the endpoint
(SNS_ENDPOINT_URL, or the region's, partitions such as cn-* included), the region,
the credentials (AWS_* settings when given, else the standard chain: environment,
profile, instance role, refreshed as they expire), the CA bundle (AWS_CA_BUNDLE)
and HTTP(S)_PROXY / NO_PROXY. It also runs the optional opt-out check. Publish
itself, once per SMS, goes through ``otpgate.delivery.fast_sns_publish``, which costs a
fraction of the client's CPU per call; with that fast path off
(``SnsConfig.fast_path``), through the client's own ``publish``.

Every failure either path can meet ends in one of four outcomes:

- throttling, 5xx and connections that never opened: retried within the send's
  budget (``otpgate.delivery.retry``), then ``SmsUnavailable`` (503, Retry-After);
- the number refused (InvalidParameter / ParameterValueInvalid about the phone
  number): ``SmsRejected`` (400); an opted-out number: ``SmsOptedOut`` (400);
- credentials or permissions refused, or none found: ``SmsFailed`` (502), and
  ``problem`` is set for readiness until a send succeeds; other configuration
  faults (TLS, a proxy refusing us, any other error answer) are ``SmsFailed`` too;
- a read timeout or a connection dropped mid-request: ``SmsUnavailable`` at once.
  Publish has no idempotency key, so SNS may have taken the message; retrying
  could send the user two SMS. The user can ask again immediately instead.

Answers SNS itself never gives end differently on the client's path: it cannot
read an error document that is not XML (``SmsFailed`` whatever it says), and it
follows redirects.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.parsers import ResponseParserError

from otpgate import __version__
from otpgate.delivery.health import ProblemLatch, redact
from otpgate.delivery.retry import ProviderUnavailable, Retrier, RetryPolicy
from otpgate.delivery.sigv4 import Credentials, SigningCredentials
from otpgate.domain.errors import OtpError, SmsFailed, SmsOptedOut, SmsRejected

if TYPE_CHECKING:
    from otpgate.delivery.fast_sns_publish import SnsPublisher

# The logger name log lines carry, as before the module moved.
log = logging.getLogger("otpgate.sms.sns")

_THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "Throttled",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "KMSThrottlingException",
    }
)
_BAD_PARAMETER = frozenset(
    {
        "InvalidParameter",
        "InvalidParameterException",
        "InvalidParameterValue",
        "ParameterValueInvalid",
        "ValidationError",
        "ValidationException",
    }
)
_OPTED_OUT = frozenset({"OptedOut", "OptedOutException"})
_CREDENTIALS = frozenset(
    {
        "AuthorizationError",
        "AuthorizationErrorException",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "NotAuthorized",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "InvalidSecurity",
        "OptInRequired",
    }
)
_TRANSIENT = frozenset(
    {
        "InternalError",
        "InternalErrorException",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
    }
)
# SNS names the offending parameter: "Invalid parameter: PhoneNumber Reason: ...".
_PARAMETER_NAMED = re.compile(r"parameter:\s*([A-Za-z.]+)", re.IGNORECASE)
_NUMBER_PARAMETERS = frozenset({"phonenumber", "phone"})

Operation = Callable[..., Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class SnsConfig:
    """What the SNS sender needs, built from settings in wiring.

    ``credentials`` holds ``aws_access_key_id``, ``aws_secret_access_key`` and
    optionally ``aws_session_token``; empty means the standard AWS chain.
    """

    region: str
    endpoint_url: str | None = None
    sms_type: str = "Transactional"
    sender_id: str | None = None
    origination_number: str | None = None
    max_price: Decimal | None = None
    check_opt_out: bool = False
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    credentials: Mapping[str, str] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Publish through ``sns_publish``; False: through the client's own ``publish``.
    fast_path: bool = True

    def __repr__(self) -> str:
        return f"SnsConfig(region={self.region!r}, endpoint_url={self.endpoint_url!r}, ...)"


class SnsSender:
    name = "sns"

    def __init__(self, config: SnsConfig) -> None:
        c = config
        self._region = c.region
        self._endpoint_url = c.endpoint_url
        self._credentials = dict(c.credentials)
        self._static: Credentials | None = None
        if self._credentials:
            self._static = Credentials(
                self._credentials["aws_access_key_id"],
                self._credentials["aws_secret_access_key"],
                self._credentials.get("aws_session_token"),
            )
        self._connect_timeout = c.connect_timeout
        self._read_timeout = c.read_timeout
        self._config = Config(
            connect_timeout=c.connect_timeout,
            read_timeout=c.read_timeout,
            # One attempt per call: the retry loop here owns the budget.
            retries={"total_max_attempts": 1, "mode": "standard"},
            # botocore's default of 10 made sends queue for a connection under load
            # (p99 400 ms at 50 concurrent sends); as many as the lean path's pool.
            max_pool_connections=100,
        )
        self._attributes = _attributes(c.sms_type, c.sender_id, c.origination_number, c.max_price)
        self._check_opt_out = c.check_opt_out
        self._retrier = Retrier(c.retry)
        self._health = ProblemLatch(log)
        self._session = get_session()
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._fast = c.fast_path
        self._chain: Any = None  # credentials from the standard chain, when not given
        self._publisher: SnsPublisher | None = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> None:
        """The client, and the fast publish path, made on first use (both bind to the loop).

        Credentials from the chain are resolved once here, as the client does: none
        found stays none until a restart, and each send then fails as NoCredentialsError.
        """
        if self._client is not None and (self._publisher is not None or not self._fast):
            return
        async with self._lock:
            if self._client is None:
                self._client = await self._stack.enter_async_context(
                    self._session.create_client(
                        "sns",
                        region_name=self._region,
                        endpoint_url=self._endpoint_url,
                        config=self._config,
                        **self._credentials,
                    )
                )
            if self._fast and self._publisher is None:
                if self._static is None:
                    # The client's own, already resolved: refreshes are shared.
                    self._chain = await self._session.get_credentials()
                self._publisher = await self._publisher_for(self._client)

    async def _publisher_for(self, client: Any) -> SnsPublisher:
        # Imported here: with the fast path off, its libraries' internals are never touched.
        from otpgate.delivery.fast_sns_publish import publisher_for

        try:
            return await publisher_for(
                client,
                self._session,
                attributes=self._attributes,
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                user_agent=f"otpgate/{__version__}",
            )
        except OSError as exc:  # ssl.SSLError included
            self._health.fail("sns: the CA bundle cannot be loaded", redact(exc))
            raise SmsFailed() from exc

    async def send(self, phone: str, message: str) -> str:
        try:
            await self._ready()
        except BotoCoreError as exc:
            raise self._botocore_error(exc) from exc
        budget = self._retrier.start()
        if self._check_opt_out:
            client = self._client
            status = await budget.call(
                lambda: self._call(
                    client.check_if_phone_number_is_opted_out,
                    safe_to_repeat=True,
                    phoneNumber=phone,
                ),
                "sns opt-out check",
            )
            if status.get("isOptedOut"):
                log.info("sns: the destination has opted out; not sending")
                raise SmsOptedOut()
        publish = self._publish if self._fast else self._publish_with_client
        message_id = await budget.call(lambda: publish(phone, message), "sns publish")
        self._health.ok()
        if not message_id:
            # Accepted without an id (seen from emulators and proxies): the SMS is on its
            # way, so answer success with a local id rather than fail the user.
            local_id = str(uuid.uuid4())
            log.warning("sns accepted the message without a MessageId; using %s", local_id)
            return local_id
        return message_id

    async def _publish(self, phone: str, message: str) -> str | None:
        """One attempt, with credentials fetched per attempt so refreshed ones take effect."""
        from otpgate.delivery.fast_sns_publish import (
            PublishFailed,
            PublishRefused,
        )  # loaded by _ready

        assert self._publisher is not None
        try:
            credentials = await self._signing_credentials()
        except BotoCoreError as exc:
            raise self._botocore_error(exc) from exc
        try:
            return await self._publisher.publish(phone, message, credentials)
        except PublishRefused as exc:
            raise self._provider_error(exc.code, exc.message, exc.status) from exc
        except PublishFailed as exc:
            log.error("sns request failed: %s", exc)
            raise SmsFailed() from exc

    async def _publish_with_client(self, phone: str, message: str) -> str | None:
        """One attempt through the client's own ``publish`` (the fast path off)."""
        response = await self._call(
            self._client.publish,
            safe_to_repeat=False,
            PhoneNumber=phone,
            Message=message,
            MessageAttributes=self._attributes,
        )
        message_id = response.get("MessageId")
        return str(message_id) if message_id else None

    async def _signing_credentials(self) -> SigningCredentials:
        if self._static is not None:
            return self._static
        if self._chain is None:
            raise NoCredentialsError()
        frozen: SigningCredentials = await self._chain.get_frozen_credentials()
        return frozen

    async def _call(self, operation: Operation, *, safe_to_repeat: bool, **params: Any) -> Any:
        """One call through the aiobotocore client (the opt-out check; Publish when stock)."""
        try:
            return await operation(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise self._provider_error(
                str(error.get("Code", "")),
                str(error.get("Message", "")),
                exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
            ) from exc
        except (ReadTimeoutError, ConnectionClosedError) as exc:
            raise ProviderUnavailable(
                f"no answer ({type(exc).__name__})", retry=safe_to_repeat
            ) from exc
        except BotoConnectionError as exc:
            raise self._connection_error(exc, safe_to_repeat) from exc
        except BotoCoreError as exc:
            raise self._botocore_error(exc) from exc
        except ResponseParserError as exc:
            # Not an AWS error document (SNS answers XML): nothing to tell what went wrong.
            log.error("sns answered with a document the client cannot read: %s", redact(exc))
            raise SmsFailed() from exc

    def _connection_error(self, exc: BotoConnectionError, safe_to_repeat: bool) -> Exception:
        """A connection failure in the client, told apart by aiohttp's error as the fast
        path tells them apart: whether the request can have reached SNS decides a retry.

        aiobotocore reports a connection reset after the request went out as an
        EndpointConnectionError, like one that never opened; only the latter is safe
        to retry for Publish.
        """
        error = exc.kwargs.get("error")  # aiohttp's, as aiobotocore keeps it
        if isinstance(
            error, aiohttp.ClientConnectorCertificateError | aiohttp.ClientHttpProxyError
        ):
            return self._botocore_error(exc)  # our configuration: trust, or the proxy's rules
        never_opened = (
            aiohttp.ClientConnectorError,
            aiohttp.ConnectionTimeoutError,
            socket.gaierror,
        )
        if isinstance(error, never_opened) or (
            error is None and isinstance(exc, EndpointConnectionError | ConnectTimeoutError)
        ):
            # The connection never opened: nothing reached SNS, so another try is safe.
            return ProviderUnavailable(f"unreachable ({type(exc).__name__})")
        if error is None:
            return self._botocore_error(exc)
        return ProviderUnavailable(f"no answer ({type(exc).__name__})", retry=safe_to_repeat)

    def _botocore_error(self, exc: BotoCoreError) -> Exception:
        """What a client-side botocore failure (credentials, configuration) becomes."""
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            self._health.fail("sns: no credentials", type(exc).__name__)
        elif isinstance(exc, HTTPClientError) and _tls_set_up_failed(exc):
            self._health.fail("sns: the CA bundle cannot be loaded", redact(exc))
        else:
            log.error("sns client error: %s", redact(exc))
        return SmsFailed()

    def _provider_error(self, code: str, message: str, status: int | None) -> Exception:
        """What an error answer from SNS becomes, whichever path made the request."""
        detail = redact(message)
        if code in _THROTTLED or status == 429:
            return ProviderUnavailable(f"throttled ({code or status})")
        if code in _OPTED_OUT:
            log.info("sns: the destination has opted out (%s)", code)
            return SmsOptedOut()
        if code in _BAD_PARAMETER:
            return _bad_parameter(code, detail)
        if code in _CREDENTIALS:
            self._health.fail(f"sns: {code}", f"{code} (HTTP {status}): {detail}")
            return SmsFailed()
        if code in _TRANSIENT or (isinstance(status, int) and status >= 500):
            return ProviderUnavailable(f"{code or 'error'} (HTTP {status})")
        log.error("sns failure: %s (HTTP %s): %s", code, status, detail)
        return SmsFailed()

    @property
    def problem(self) -> str | None:
        return self._health.problem

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None
        await self._stack.aclose()
        self._client = None


def _tls_set_up_failed(exc: HTTPClientError) -> bool:
    """aiobotocore's catch-all wraps a file error from loading the CA bundle, which it does
    before connecting (the network's own errors reach the sender as other classes)."""
    error = exc.kwargs.get("error")
    return isinstance(error, OSError) and not isinstance(error, aiohttp.ClientError)


def _bad_parameter(code: str, detail: str) -> OtpError:
    """The number, unless SNS names another parameter (then our request is wrong)."""
    named = _PARAMETER_NAMED.search(detail)
    if named and named.group(1).lower() not in _NUMBER_PARAMETERS:
        log.error("sns refused a request parameter: %s: %s", code, detail)
        return SmsFailed()
    log.info("sns rejected the destination: %s", code)
    return SmsRejected()


def _attributes(
    sms_type: str,
    sender_id: str | None,
    origination_number: str | None,
    max_price: Decimal | None,
) -> dict[str, dict[str, str]]:
    """Per-message SMS attributes; only the ones configured are sent."""
    values = {
        "AWS.SNS.SMS.SMSType": ("String", sms_type),
        "AWS.SNS.SMS.SenderID": ("String", sender_id),
        "AWS.MM.SMS.OriginationNumber": ("String", origination_number),
        "AWS.SNS.SMS.MaxPrice": ("Number", None if max_price is None else format(max_price, "f")),
    }
    return {
        name: {"DataType": data_type, "StringValue": value}
        for name, (data_type, value) in values.items()
        if value
    }
