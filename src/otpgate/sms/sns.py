"""AWS SNS sender over an async client (aiobotocore).

Credentials follow the standard AWS chain (environment, profile, instance
role); AWS_* settings, when given, are passed explicitly. SNS_ENDPOINT_URL
points the client elsewhere, such as a local emulator.

Every failure the client can raise ends in one of four outcomes:

- throttling, 5xx and connections that never opened: retried within the send's
  budget (``otpgate.sms.retry``), then ``SmsUnavailable`` (503, Retry-After);
- the number refused (InvalidParameter / ParameterValueInvalid about the phone
  number): ``SmsRejected`` (400); an opted-out number: ``SmsOptedOut`` (400);
- credentials or permissions refused: ``SmsFailed`` (502), and ``problem`` is set
  for readiness until a send succeeds;
- a read timeout or a connection dropped mid-request: ``SmsUnavailable`` at once.
  Publish has no idempotency key, so SNS may have taken the message; retrying
  could send the user two SMS. The user can ask again immediately instead.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from otpgate.domain.errors import OtpError, SmsFailed, SmsOptedOut, SmsRejected
from otpgate.sms.health import ProblemLatch, redact
from otpgate.sms.retry import ProviderUnavailable, Retrier, RetryPolicy

if TYPE_CHECKING:
    from otpgate.settings import Settings

log = logging.getLogger(__name__)

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


class SnsSender:
    name = "sns"

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        sms_type: str = "Transactional",
        sender_id: str | None = None,
        origination_number: str | None = None,
        max_price: Decimal | None = None,
        check_opt_out: bool = False,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        credentials: dict[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._region = region
        self._endpoint_url = endpoint_url
        self._credentials = credentials or {}
        self._config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # One attempt per call: the retry loop here owns the budget.
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        self._attributes = _attributes(sms_type, sender_id, origination_number, max_price)
        self._check_opt_out = check_opt_out
        self._retrier = Retrier(retry or RetryPolicy())
        self._health = ProblemLatch(log)
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> SnsSender:
        credentials: dict[str, str] = {}
        if settings.aws_access_key_id and settings.aws_secret_access_key:
            credentials["aws_access_key_id"] = settings.aws_access_key_id
            credentials["aws_secret_access_key"] = settings.aws_secret_access_key.get_secret_value()
            if settings.aws_session_token:
                credentials["aws_session_token"] = settings.aws_session_token.get_secret_value()
        return cls(
            region=settings.aws_region,
            endpoint_url=settings.sns_endpoint_url,
            sms_type=settings.sns_sms_type,
            sender_id=settings.sns_sms_sender_id,
            origination_number=settings.sns_origination_number,
            max_price=settings.sns_max_price,
            check_opt_out=settings.sns_check_opt_out,
            connect_timeout=settings.sms_connect_timeout_seconds,
            read_timeout=settings.sms_read_timeout_seconds,
            credentials=credentials,
            retry=RetryPolicy.from_settings(settings),
        )

    async def _get_client(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await self._stack.enter_async_context(
                        get_session().create_client(
                            "sns",
                            region_name=self._region,
                            endpoint_url=self._endpoint_url,
                            config=self._config,
                            **self._credentials,
                        )
                    )
        return self._client

    async def send(self, phone: str, message: str) -> str:
        client = await self._get_client()
        budget = self._retrier.start()
        if self._check_opt_out:
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
        reply = await budget.call(
            lambda: self._call(
                client.publish,
                safe_to_repeat=False,
                PhoneNumber=phone,
                Message=message,
                MessageAttributes=self._attributes,
            ),
            "sns publish",
        )
        self._health.ok()
        message_id = reply.get("MessageId")
        if not message_id:
            # Accepted without an id (seen from emulators and proxies): the SMS is on its
            # way, so answer success with a local id rather than fail the user.
            local_id = str(uuid.uuid4())
            log.warning("sns accepted the message without a MessageId; using %s", local_id)
            return local_id
        return str(message_id)

    async def _call(self, operation: Operation, *, safe_to_repeat: bool, **params: Any) -> Any:
        try:
            return await operation(**params)
        except ClientError as exc:
            raise self._client_error(exc) from exc
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            # The connection never opened: nothing reached SNS, so another try is safe.
            raise ProviderUnavailable(f"unreachable ({type(exc).__name__})") from exc
        except (ReadTimeoutError, ConnectionClosedError) as exc:
            raise ProviderUnavailable(
                f"no answer ({type(exc).__name__})", retry=safe_to_repeat
            ) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            self._health.fail("sns: no credentials", type(exc).__name__)
            raise SmsFailed() from exc
        except BotoCoreError as exc:
            log.error("sns client error: %s", redact(exc))
            raise SmsFailed() from exc

    def _client_error(self, exc: ClientError) -> Exception:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        detail = redact(error.get("Message", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
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
        await self._stack.aclose()
        self._client = None


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
