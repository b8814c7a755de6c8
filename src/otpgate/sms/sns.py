"""AWS SNS sender over an async client (aiobotocore).

Credentials follow the standard AWS chain (environment, profile, instance
role); AWS_* settings, when given, are passed explicitly. SNS_ENDPOINT_URL
points the client elsewhere, such as a local emulator.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
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

from otpgate.domain.errors import SmsFailed, SmsRejected, SmsUnavailable

if TYPE_CHECKING:
    from otpgate.settings import Settings

log = logging.getLogger(__name__)

_THROTTLED = frozenset(
    {"Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException"}
)
_BAD_NUMBER = frozenset(
    {
        "InvalidParameter",
        "InvalidParameterException",
        "InvalidParameterValue",
        "ParameterValueInvalid",
        "OptedOut",
    }
)
_OUR_FAULT = frozenset(
    {
        "AuthorizationError",
        "AuthorizationErrorException",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSecurity",
    }
)
_TRANSIENT = frozenset(
    {"InternalError", "InternalErrorException", "ServiceUnavailable", "KMSThrottlingException"}
)
_UNREACHABLE = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)


class SnsSender:
    name = "sns"

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        sms_type: str = "Transactional",
        sender_id: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        credentials: dict[str, str] | None = None,
    ) -> None:
        self._region = region
        self._endpoint_url = endpoint_url
        self._credentials = credentials or {}
        self._config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": 2, "mode": "standard"},
        )
        attributes = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": sms_type}}
        if sender_id:
            attributes["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": sender_id}
        self._attributes = attributes
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
            connect_timeout=settings.sms_connect_timeout_seconds,
            read_timeout=settings.sms_read_timeout_seconds,
            credentials=credentials,
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
        try:
            reply = await client.publish(
                PhoneNumber=phone, Message=message, MessageAttributes=self._attributes
            )
        except ClientError as exc:
            raise _map_client_error(exc) from exc
        except _UNREACHABLE as exc:
            log.warning("sns unreachable: %s", type(exc).__name__)
            raise SmsUnavailable() from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            log.error("sns credentials missing: %s", type(exc).__name__)
            raise SmsFailed() from exc
        except BotoCoreError as exc:
            log.error("sns client error: %s", type(exc).__name__)
            raise SmsFailed() from exc
        return str(reply["MessageId"])

    @property
    def problem(self) -> str | None:
        return None

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None


def _map_client_error(exc: ClientError) -> Exception:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _THROTTLED or status == 429:
        log.warning("sns throttled: %s", code)
        return SmsUnavailable()
    if code in _BAD_NUMBER:
        log.info("sns rejected the destination: %s", code)
        return SmsRejected()
    if code in _OUR_FAULT:
        log.error("sns refused our credentials or permissions: %s", code)
        return SmsFailed()
    if code in _TRANSIENT or (isinstance(status, int) and status >= 500):
        log.warning("sns transient failure: %s", code)
        return SmsUnavailable()
    log.error("sns failure: %s (HTTP %s)", code, status)
    return SmsFailed()
