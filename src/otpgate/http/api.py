"""The API routes: authenticate, rate-limit, parse, call the use case, shape the answer.

Anything a client can cause becomes a 4xx with a machine code; store and
provider failures become 503/502; nothing escapes as a stack trace. These
routes catch every error themselves, so they can be served without any
framework middleware (see ``FastRoutes`` in fast_routes.py). Both HTTP paths
call these same handlers, so the API key check (``http/auth.py``) is the same on
either.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Scope

from otpgate.components import Components
from otpgate.domain.catalog import Channel, as_channel
from otpgate.domain.errors import OtpError, RateLimited, StoreUnavailable, VerificationNotFound
from otpgate.domain.ports import RequestWindow, Verification, WindowHit
from otpgate.domain.recipient import is_email_key, mask_key
from otpgate.domain.service import DEFAULT_SEND, SendOptions
from otpgate.http.auth import end_user_address, key_name, unauthorized
from otpgate.http.body import read_json_body
from otpgate.http.client_ip import ClientIpResolver
from otpgate.http.errors import (
    HTTP_CODES,
    HttpError,
    cut_off,
    error_response,
    http_error_response,
    otp_error_response,
)
from otpgate.http.rate_limit import RateLimitHeaders
from otpgate.http.schemas import VERIFICATION_ID_PATTERN, RequestOtpBody, verify_body_model
from otpgate.observability.request_context import (
    note_api_key_name,
    note_client_ip,
    note_end_user_ip,
    note_phone,
)

log = logging.getLogger("otpgate.http")

REQUEST_OK = "OTP requested successfully. Check your phone."
REQUEST_OK_EMAIL = "OTP requested successfully. Check your email."
VERIFY_OK = "OTP verified successfully."

Handler = Callable[[Request], Awaitable[Response]]
Outcome = tuple[Response, WindowHit | None]


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class OtpApi:
    def __init__(self, components: Components, client_ip: ClientIpResolver) -> None:
        self._service = components.service
        self._limiter = components.rate_limiter
        self._headers = RateLimitHeaders(components.rate_limiter.max_requests)
        self._auth = components.api_auth
        self._auth_required = components.api_auth.required
        self._resolve_ip = client_ip.resolve
        self._limit_key = client_ip.limit_key
        self._max_body = components.http.max_body_bytes
        self._verify_model: type[BaseModel] = verify_body_model(components.http.otp_length)

    def routes(self) -> dict[str, Handler]:
        """The two hot routes, POST each, dispatched by exact path on either HTTP path."""
        return {
            "/api/v1/request-otp": self.limited("request-otp", self._request_otp),
            "/api/v1/verify-otp": self.limited("verify-otp", self._verify_otp),
        }

    def verification_routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of the routes about one verification."""
        return [
            (
                "GET",
                "/api/v1/verifications/{verification_id}",
                self.limited("verification", self._verification),
            ),
            (
                "POST",
                "/api/v1/verifications/{verification_id}/cancel",
                self.limited("verification-cancel", self._cancel, key_required=True),
            ),
        ]

    def limited(
        self,
        route: str,
        handle: Callable[[Request, str, RequestWindow], Awaitable[Outcome]],
        *,
        key_required: bool = False,
    ) -> Handler:
        """Wrap a route with the API key check and the per-IP limit (whose headers go on
        every answer after the check). ``key_required``: whatever API_AUTH says."""
        key_required = key_required or self._auth_required
        limiter = self._limiter

        async def endpoint(request: Request) -> Response:
            scope = request.scope
            forwarded, authorization, end_user = _caller_headers(scope)
            peer = scope.get("client")
            client = self._resolve_ip(peer[0] if peer else None, forwarded)
            note_client_ip(client)  # the access line uses it as it is
            scope_key = self._limit_key(client)  # an IPv6 client counts by its prefix
            # A key that is sent must be valid whatever API_AUTH says; none is due unless
            # it says required. Refused before any store step: a 401 costs no limit.
            if authorization is not None or key_required:
                name = key_name(self._auth, authorization)
                if name is None:
                    return unauthorized(sent=authorization is not None)
                note_api_key_name(name)
                scope[API_KEY_NAME] = name
                # Only a caller with a valid key may say whose request this is: the
                # per-IP limits then count the end user's address instead of its own.
                if end_user is not None:
                    address = end_user_address(end_user)
                    if address is None:
                        return http_error_response(HttpError("invalid_end_user_ip"))
                    note_end_user_ip(address)
                    scope_key = self._limit_key(address)
            window = limiter.window(route, scope_key)
            try:
                response, hit = await handle(request, scope_key, window)
            except HttpError as exc:
                return await self._malformed(exc, window)
            except OtpError as exc:
                if exc.phone is not None:
                    note_phone(exc.phone.masked())
                return otp_error_response(exc, self._headers(exc.window_hit))
            except ClientDisconnect:
                return Response(status_code=499)  # nobody is listening any more
            except asyncio.CancelledError as exc:
                # The server's shutdown timeout ran out with this request in flight.
                message, headers = cut_off(exc, route)
                return http_error_response(HttpError("shutting_down", message), headers)
            except Exception as exc:
                log.error("unhandled error", exc_info=exc)
                return error_response(500, "internal_error", HTTP_CODES["internal_error"][1])
            response.headers.update(self._headers(hit))
            return response

        return endpoint

    async def _malformed(self, exc: HttpError, window: RequestWindow) -> Response:
        """Rejected before any store step: counted on its own, so it still costs a request."""
        limiter = self._limiter
        try:
            hit = await limiter.count(window)
        except StoreUnavailable:
            return http_error_response(exc)  # the client's mistake is still the answer
        if hit.over(window):
            return otp_error_response(RateLimited(hit.reset_seconds), self._headers(hit))
        return http_error_response(exc, self._headers(hit))

    async def _request_otp(self, request: Request, client: str, window: RequestWindow) -> Outcome:
        body = await read_json_body(request, RequestOtpBody, self._max_body)
        to, channel = _send_to(body)
        if body.locale is None and channel is None:
            options = DEFAULT_SEND
        else:
            options = SendOptions(locale=body.locale, channel=channel or "sms")
        sent = await self._service.request_code(to, client, window, body.purpose, options)
        note_phone(sent.phone.masked())  # on the access line: one line per request
        payload = {
            "message": REQUEST_OK_EMAIL if sent.channel == "email" else REQUEST_OK,
            "messageId": sent.message_id,
            "expiresIn": sent.expires_in,
            "verificationId": sent.verification_id,
        }
        # Said whenever the client chose a channel, or got another than SMS: a client that
        # named none and got its SMS gets the answer it always got.
        if channel is not None or sent.channel != "sms":
            payload["channel"] = sent.channel
        return json_response(payload), sent.window_hit

    async def _verify_otp(self, request: Request, client: str, window: RequestWindow) -> Outcome:
        body: Any = await read_json_body(request, self._verify_model, self._max_body)
        if body.email is not None and body.phoneNumber is not None:
            raise HttpError("invalid_body", BOTH_RECIPIENTS)
        if body.phoneNumber is None and body.email is None and body.verificationId is None:
            raise HttpError(
                "invalid_body",
                "body must have required property 'phoneNumber' or 'verificationId'.",
            )
        by_email = body.email is not None
        verified = await self._service.verify_code(
            body.email if by_email else body.phoneNumber,
            body.otp,
            window,
            purpose=body.purpose,
            verification_id=body.verificationId,
            kind="email" if by_email else "phone",
        )
        note_phone(verified.phone.masked())
        payload = {
            "success": True,
            "message": VERIFY_OK,
            "token": verified.token,
            "verificationId": verified.verification_id,
        }
        return json_response(payload), verified.window_hit

    async def _verification(self, request: Request, client: str, window: RequestWindow) -> Outcome:
        return await self._on_verification(request, window, self._service.verification)

    async def _cancel(self, request: Request, client: str, window: RequestWindow) -> Outcome:
        return await self._on_verification(request, window, self._service.cancel)

    async def _on_verification(
        self,
        request: Request,
        window: RequestWindow,
        act: Callable[[str], Awaitable[Verification]],
    ) -> Outcome:
        """One hit on the client's window (no use case here counts it), then ``act`` on
        the verification the path names."""
        hit = await self._limiter.admit(window)
        try:
            record = await act(_verification_id(request))
        except OtpError as exc:
            raise _with_hit(exc, hit) from None
        return json_response(_verification_body(record, request)), hit


# Where the API key check leaves the valid key's name, for a route that shows more to a
# caller with a key.
API_KEY_NAME = "otpgate.api_key_name"

BOTH_RECIPIENTS = "body must have 'phoneNumber' or 'email', not both."


def _send_to(body: RequestOtpBody) -> tuple[str, Channel | None]:
    """Where the code goes, and the channel the client named (email, for an address)."""
    phone, email = body.phoneNumber, body.email
    channel = as_channel(body.channel) if body.channel is not None else None  # checked
    if email is None:
        if phone is None:
            raise HttpError("invalid_body", "body must have required property 'phoneNumber'.")
        if channel == "email":
            raise HttpError(
                "invalid_body", "body must have required property 'email' for channel email."
            )
        return phone, channel
    if phone is not None:
        raise HttpError("invalid_body", BOTH_RECIPIENTS)
    if channel not in (None, "email"):
        raise HttpError(
            "invalid_body", f"body/channel {channel} sends to a phoneNumber, not an email."
        )
    return email, "email"


def _verification_id(request: Request) -> str:
    vid = str(request.path_params.get("verification_id", ""))
    if not re.match(VERIFICATION_ID_PATTERN, vid):
        raise VerificationNotFound()
    return vid


def _verification_body(record: Verification, request: Request) -> dict[str, Any]:
    keyed = request.scope.get(API_KEY_NAME) is not None
    field = "email" if is_email_key(record.phone) else "phoneNumber"
    return {
        "id": record.id,
        field: record.phone if keyed else mask_key(record.phone),
        "status": record.status,
        "channel": record.channel,
        "purpose": record.purpose,
        "createdAt": _iso(record.created_at),
        "updatedAt": _iso(record.updated_at),
        "expiresAt": _iso(record.expires_at),
    }


def _iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _with_hit(exc: OtpError, hit: WindowHit) -> OtpError:
    exc.window_hit = hit
    return exc


def _caller_headers(scope: Scope) -> tuple[str | None, bytes | None, bytes | None]:
    """The first X-Forwarded-For, Authorization and X-End-User-IP, in one pass over the
    scope's headers (no Headers object).

    A repeated Authorization or X-End-User-IP is ambiguous (which one counts?), so it reads
    as empty: no valid key, no valid address.
    """
    forwarded: bytes | None = None
    authorization: bytes | None = None
    end_user: bytes | None = None
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"x-forwarded-for":
            if forwarded is None:
                forwarded = value
        elif name == b"authorization":
            authorization = value if authorization is None else b""
        elif name == b"x-end-user-ip":
            end_user = value if end_user is None else b""
    return (
        forwarded.decode("latin-1") if forwarded is not None else None,
        authorization,
        end_user,
    )
