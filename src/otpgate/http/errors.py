"""Every error the API returns: status by machine code, and the one body shape.

The body keeps the Node service's ``{"statusCode","error","message"}`` and adds
``code``, a stable machine string clients can switch on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from functools import lru_cache
from http import HTTPStatus

import orjson
from starlette.responses import Response

from otpgate.domain.errors import OtpError, SentBeforeShutdown
from otpgate.observability.request_context import note_error_code

log = logging.getLogger("otpgate.http")

# Status for each machine code a use case can raise. A code missing here is a bug
# and is answered 500 by the catch-all, never silently as 400.
STATUS_BY_CODE: dict[str, int] = {
    "invalid_phone_number": 400,
    "landline_not_supported": 400,
    "invalid_code": 400,
    "too_many_attempts": 429,
    "rate_limited": 429,
    "resend_cooldown": 429,
    "phone_send_limit": 429,
    "ip_phone_limit": 429,
    "country_budget": 429,
    "global_budget": 503,
    "prefix_blocked": 429,
    "country_blocked": 429,
    "phone_locked": 429,
    "country_not_allowed": 403,
    "range_denied": 403,
    "store_unavailable": 503,
    "sms_number_rejected": 400,
    "sms_number_opted_out": 400,
    "sms_provider_unavailable": 503,
    "sms_provider_error": 502,
    "verification_not_found": 404,
    # The channels besides SMS (email, WhatsApp, voice): their own codes, the SMS ones kept.
    "invalid_email": 400,
    "channel_not_enabled": 400,
    "recipient_rejected": 400,
    "provider_unavailable": 503,
    "provider_error": 502,
    "email_send_limit": 429,
    "ip_email_limit": 429,
    "email_domain_budget": 429,
    # Second factors (authenticator apps, recovery codes) on the credential database.
    "invalid_identity": 400,
    "factor_not_found": 404,
    "factor_already_verified": 409,
    "credentials_unavailable": 503,
}

# Errors raised by the HTTP layer itself, before any use case runs.
HTTP_CODES: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "Body is not valid JSON."),
    "invalid_body": (400, "Body does not match the schema."),
    "invalid_end_user_ip": (400, "X-End-User-IP must be one IPv4 or IPv6 address."),
    "invalid_locale": (400, "locale must be a BCP 47 language tag, such as es or pt-BR."),
    "invalid_channel": (400, "channel must be one of sms, whatsapp, call or email."),
    "invalid_api_key": (401, "Invalid API key."),
    "unsupported_media_type": (415, "Content-Type must be application/json."),
    "payload_too_large": (413, "Body is too large."),
    "not_found": (404, "Not found."),
    "method_not_allowed": (405, "Method not allowed."),
    "internal_error": (500, "Internal server error."),
    "shutting_down": (503, "The service is restarting. Please try again."),
}


class HttpError(Exception):
    """An error found while parsing the request; ``code`` is a key of HTTP_CODES."""

    def __init__(self, code: str, message: str | None = None) -> None:
        self.code = code
        self.status, default = HTTP_CODES[code]
        self.message = message or default
        super().__init__(self.message)


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    note_error_code(code)
    return Response(
        _error_body(status, code, message),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


@lru_cache(maxsize=512)
def _error_body(status: int, code: str, message: str) -> bytes:
    """The serialised body; the same few errors (a wrong code above all) repeat."""
    body = {
        "statusCode": status,
        "error": HTTPStatus(status).phrase,
        "message": message,
        "code": code,
    }
    return orjson.dumps(body)


def otp_error_response(exc: OtpError, headers: dict[str, str] | None = None) -> Response:
    status = STATUS_BY_CODE[exc.code]
    if exc.retry_after is not None:
        headers = {**(headers or {}), "retry-after": str(exc.retry_after)}
    if exc.verification_id is None:
        return error_response(status, exc.code, exc.message, headers)
    # A failed send's answer names its (failed) verification, so it can be looked up.
    note_error_code(exc.code)
    body = orjson.loads(_error_body(status, exc.code, exc.message))
    body["verificationId"] = exc.verification_id
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


def http_error_response(exc: HttpError, headers: Mapping[str, str] | None = None) -> Response:
    return error_response(exc.status, exc.code, exc.message, headers)


def cut_off(exc: asyncio.CancelledError, route: str) -> tuple[str, dict[str, str]]:
    """A request the server's shutdown timeout cancelled: the task goes on (to answer a
    clean 503 instead of a bare 500 and a traceback), and the answer's message and
    headers. A send already handed to the provider is not undone: its answer says the
    code was sent, and Retry-After is what is left of the recipient's resend cooldown
    (sooner, the retry would be refused with ``resend_cooldown``)."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    if isinstance(exc, SentBeforeShutdown):
        log.warning(
            "cut off by the shutdown timeout after the code was handed to the provider",
            extra={"route": route},
        )
        return exc.message, {"retry-after": str(exc.retry_after)}
    log.warning("cut off by the shutdown timeout", extra={"route": route})
    return HTTP_CODES["shutting_down"][1], {"retry-after": "1"}
