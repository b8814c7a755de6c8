"""A Twilio Verify v2 compatible API: teams on Twilio Verify move by changing one URL.

A thin layer over the same use cases, store and limits as the otpgate routes
(``http/api.py``): only the shapes differ. Requests are form-encoded and
authenticated by HTTP Basic (the account sid and its auth token); answers are
Twilio's verification JSON, and errors Twilio's ``{"code","message","more_info",
"status"}`` (exactly these keys: with ``type`` and ``title`` too the SDK raises
another exception class).

What maps to what:
- ``POST Verifications`` is a send (``OtpService.request_code``) on its ``Channel``
  (``sms``, ``whatsapp``, ``call``, or ``email`` with an address as ``To``), counted in
  the same per-IP window as ``/api/v1/request-otp``; ``Amount`` and ``Payee`` bind the
  code as a purpose does; ``DeviceIp`` is the end user's address, which the per-IP
  limits count instead of the caller's. The service's friendly name is ``{app}`` in
  the text. A create for a ``To`` whose verification is pending resumes it (same sid,
  a fresh code), as Twilio resends under the same sid.
- ``POST VerificationCheck`` is a verify (in the ``/api/v1/verify-otp`` window): a
  wrong code is ``pending``/``valid: false``, no code to check is 404 20404.
- ``GET``/``POST Verifications/{Sid}`` look up, cancel and approve a verification.

A verification keeps its service, amount and payee as its ``details``: a fetch shows
them, and a sid is found only under its own service.

The credentials are never logged, and a refused request costs no store step.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qs

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from otpgate.components import Components, VerifyV2Config
from otpgate.config.api_keys import digest_matches
from otpgate.domain.catalog import as_channel
from otpgate.domain.errors import (
    InvalidCode,
    NoPendingCode,
    OtpError,
    RateLimited,
    StoreUnavailable,
    VerificationNotFound,
)
from otpgate.domain.locale import is_locale
from otpgate.domain.message import check_android_app_hash, check_app_name
from otpgate.domain.ports import RequestWindow, Verification, WindowHit
from otpgate.domain.service import OtpService, SendOptions
from otpgate.http.body import BodyTooLarge, read_body
from otpgate.http.client_ip import ClientIpResolver
from otpgate.http.errors import cut_off
from otpgate.http.rate_limit import RateLimitHeaders
from otpgate.http.schemas import VERIFICATION_ID_PATTERN
from otpgate.observability.request_context import (
    note_client_ip,
    note_end_user_ip,
    note_error_code,
    note_phone,
)

log = logging.getLogger("otpgate.http")

PREFIX = "/v2/Services/{service_sid}"
# The longest Amount or Payee kept (both fit a verification's details together).
DETAIL_MAX = 200
_VERIFICATION_ID = re.compile(VERIFICATION_ID_PATTERN)
FORM = b"application/x-www-form-urlencoded"
CHALLENGE = {"www-authenticate": 'Basic realm="Twilio API"'}

Handler = Callable[[Request], Awaitable[Response]]
Outcome = tuple[Response, WindowHit | None]
Form = dict[str, str]
# Wraps a route's handler (given the name of its per-IP window) as a v2 endpoint.
Endpoint = Callable[[str, Callable[[Request, "Call"], Awaitable[Outcome]]], Handler]


class MoreRoutes(Protocol):
    """More v2 routes (``twilio_factors.py``), run through the same endpoint wrapper."""

    def routes(self, endpoint: Endpoint) -> list[tuple[str, str, Handler]]: ...


class TwilioError(Exception):
    """An answer in Twilio's error shape: HTTP status, Twilio error code, message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)


def invalid_parameter(name: str, why: str = "") -> TwilioError:
    return TwilioError(400, 60200, f"Invalid parameter: {name}" + (f" ({why})" if why else ""))


def not_found(path: str) -> TwilioError:
    return TwilioError(404, 20404, f"The requested resource {path} was not found")


# otpgate's machine codes as Twilio's errors. A code missing here is answered 500 20500.
TWILIO_BY_CODE: dict[str, tuple[int, int, str]] = {
    "invalid_phone_number": (400, 60200, "Invalid parameter: To"),
    "landline_not_supported": (400, 60205, "SMS is not supported by landline phone number"),
    # A wrong code whose verification cannot be shown (a code stored before verifications
    # were recorded, or one whose record is gone): nothing to answer "pending" with.
    "invalid_code": (404, 20404, "The requested resource was not found"),
    "too_many_attempts": (429, 60202, "Max check attempts reached"),
    "phone_locked": (429, 60202, "Max check attempts reached"),
    "rate_limited": (429, 20429, "Too Many Requests"),
    "resend_cooldown": (429, 60203, "Max send attempts reached"),
    "phone_send_limit": (429, 60203, "Max send attempts reached"),
    "ip_phone_limit": (429, 60203, "Max send attempts reached"),
    "country_budget": (429, 60203, "Max send attempts reached"),
    "prefix_blocked": (429, 60410, "Verification delivery attempt blocked"),
    "country_blocked": (429, 60410, "Verification delivery attempt blocked"),
    "country_not_allowed": (403, 60605, "Verification delivery to this country is not allowed"),
    "range_denied": (403, 60605, "Verification delivery to this number is not allowed"),
    "global_budget": (503, 20503, "Service unavailable: the send budget is spent"),
    "store_unavailable": (503, 20503, "Service unavailable, please try again later"),
    "sms_provider_unavailable": (503, 20503, "Service unavailable: the SMS provider"),
    "sms_provider_error": (502, 60008, "The SMS could not be sent"),
    "sms_number_rejected": (400, 60200, "Invalid parameter: To"),
    "sms_number_opted_out": (400, 21610, "Attempt to send to unsubscribed recipient"),
    "invalid_email": (400, 60200, "Invalid parameter: To"),
    # As before channels other than SMS were served: an invalid Channel.
    "channel_not_enabled": (400, 60200, "Invalid parameter: Channel (not enabled)"),
    "recipient_rejected": (400, 60200, "Invalid parameter: To"),
    "provider_unavailable": (503, 20503, "Service unavailable: the delivery provider"),
    "provider_error": (502, 60008, "The code could not be sent"),
    "email_send_limit": (429, 60203, "Max send attempts reached"),
    "ip_email_limit": (429, 60203, "Max send attempts reached"),
    "email_domain_budget": (429, 60203, "Max send attempts reached"),
    # The TOTP routes (``twilio_factors.py``).
    "factor_not_found": (404, 20404, "The requested resource was not found"),
    "invalid_identity": (400, 60200, "Invalid parameter: Identity"),
    "credentials_unavailable": (503, 20503, "Service unavailable, please try again later"),
}


def error_response(
    error: TwilioError, headers: dict[str, str] | None = None, *, machine_code: str | None = None
) -> Response:
    note_error_code(machine_code or f"twilio_{error.code}")
    body = {
        "code": error.code,
        "message": error.message,
        "more_info": f"https://www.twilio.com/docs/errors/{error.code}",
        "status": error.status,
    }
    return Response(
        orjson.dumps(body), status_code=error.status, headers=headers, media_type="application/json"
    )


def json_answer(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def purpose_of(amount: str | None, payee: str | None) -> str | None:
    """``Amount`` and ``Payee`` as a purpose (whose characters are few): the code then
    verifies only with both exactly as they were at create."""
    if amount is None and payee is None:
        return None
    digest = hashlib.sha256(f"{amount or ''}\x00{payee or ''}".encode()).hexdigest()
    return f"twilio:{digest[:32]}"


class TwilioVerifyApi:
    def __init__(self, components: Components, client_ip: ClientIpResolver) -> None:
        self._service = components.service
        self._clock = components.clock  # the use cases' clock, for answers built here
        self._limiter = components.rate_limiter
        self._headers = RateLimitHeaders(components.rate_limiter.max_requests)
        self._resolve_ip = client_ip.resolve
        self._limit_key = client_ip.limit_key
        self._max_body = components.http.max_body_bytes
        self._config = components.http.verify_v2

    def routes(self, *more: MoreRoutes) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of each route, ``more``'s too, each through the same
        endpoint wrapper; none while the API is not configured."""
        if self._config is None:
            return []
        config = self._config
        return [
            (
                "POST",
                f"{PREFIX}/Verifications",
                self._endpoint(config, "request-otp", self._create),
            ),
            (
                "GET",
                f"{PREFIX}/Verifications/{{sid}}",
                self._endpoint(config, "verification", self._fetch),
            ),
            (
                "POST",
                f"{PREFIX}/Verifications/{{sid}}",
                self._endpoint(config, "verification-cancel", self._update),
            ),
            (
                "POST",
                f"{PREFIX}/VerificationCheck",
                self._endpoint(config, "verify-otp", self._check),
            ),
            *(
                route
                for source in more
                for route in source.routes(
                    lambda name, handle: self._endpoint(config, name, handle)
                )
            ),
        ]

    def _endpoint(
        self,
        config: VerifyV2Config,
        route: str,
        handle: Callable[[Request, Call], Awaitable[Outcome]],
    ) -> Handler:
        """Authenticate, find the service, read the form, then run ``handle`` in the
        per-IP window of ``route`` (the otpgate route's own: one limit for both APIs)."""

        async def endpoint(request: Request) -> Response:
            scope = request.scope
            forwarded, authorization = _caller_headers(scope)
            peer = scope.get("client")
            client = self._resolve_ip(peer[0] if peer else None, forwarded)
            note_client_ip(client)
            if not _authorized(config, authorization):
                return error_response(
                    TwilioError(401, 20003, "Authenticate"),
                    CHALLENGE,
                    machine_code="invalid_api_key",
                )
            service_sid = str(request.path_params.get("service_sid", ""))
            if service_sid not in config.services:
                return error_response(not_found(f"/v2/Services/{service_sid}"))
            scope_key = self._limit_key(client)
            window = self._limiter.window(route, scope_key)
            try:
                form = await _read_form(request, self._max_body)
                device_ip = form.get("DeviceIp")
                if device_ip is not None:
                    address = _address(device_ip)
                    if address is None:
                        raise invalid_parameter("DeviceIp", "one IPv4 or IPv6 address")
                    note_end_user_ip(address)
                    scope_key = self._limit_key(address)
                    window = self._limiter.window(route, scope_key)
                call = Call(config, service_sid, form, scope_key, window, _base_url(request))
                response, hit = await handle(request, call)
            except TwilioError as exc:
                return await self._refused(exc, window if exc.status == 400 else None)
            except OtpError as exc:
                if exc.phone is not None:
                    note_phone(exc.phone.masked())
                return self._otp_error(exc)
            except ClientDisconnect:
                return Response(status_code=499)
            except asyncio.CancelledError as exc:
                message, headers = cut_off(exc, route)
                error = TwilioError(503, 20503, message)
                return error_response(error, headers, machine_code="shutting_down")
            except Exception as exc:
                log.error("unhandled error", exc_info=exc)
                error = TwilioError(500, 20500, "Internal server error")
                return error_response(error, machine_code="internal_error")
            response.headers.update(self._headers(hit))
            return response

        return endpoint

    async def _refused(self, exc: TwilioError, window: RequestWindow | None) -> Response:
        """A malformed request still costs one request in the window, as on the otpgate
        routes; a 404 or a refused credential does not."""
        if window is None:
            return error_response(exc)
        try:
            hit = await self._limiter.count(window)
        except StoreUnavailable:
            return error_response(exc)
        if hit.over(window):
            return self._otp_error(_with_hit(RateLimited(hit.reset_seconds), hit))
        return error_response(exc, self._headers(hit))

    def _otp_error(self, exc: OtpError) -> Response:
        headers = self._headers(exc.window_hit)
        if exc.retry_after is not None:
            headers["retry-after"] = str(exc.retry_after)
        if isinstance(exc, VerificationNotFound | NoPendingCode):
            error = TwilioError(404, 20404, "The requested resource was not found")
        else:
            status, code, message = TWILIO_BY_CODE.get(
                exc.code, (500, 20500, "Internal server error")
            )
            error = TwilioError(status, code, message)
        return error_response(error, headers, machine_code=exc.code)

    # --- the routes --------------------------------------------------------------------

    async def _create(self, request: Request, call: Call) -> Outcome:
        form = call.form
        to = required(form, "To")
        channel = as_channel(required(form, "Channel"))
        if channel is None:
            raise invalid_parameter("Channel", "sms, whatsapp, call or email")
        amount, payee = form.get("Amount"), form.get("Payee")
        details = call.details(amount, payee)
        options = SendOptions(
            locale=_checked(form, "Locale", _check_locale),
            app=_checked(form, "CustomFriendlyName", check_app_name)
            or call.config.services[call.service_sid],
            android_app_hash=_checked(form, "AppHash", check_android_app_hash),
            details=details,
            resume=True,
            channel=channel,
        )
        sent = await self._service.request_code(
            to, call.client_key, call.window, purpose_of(amount, payee), options
        )
        note_phone(sent.phone.masked())
        try:
            record = await self._service.verification(sent.verification_id)
        except (VerificationNotFound, StoreUnavailable):
            # Sent all the same: the answer is built from what the send returned.
            now = self._clock()
            record = Verification(
                sent.verification_id,
                sent.phone.key,
                "pending",
                sent.channel,
                None,
                now,
                now,
                now + sent.expires_in,
                details,
            )
        return json_answer(call.body(record), 201), sent.window_hit

    async def _check(self, request: Request, call: Call) -> Outcome:
        form = call.form
        code = required(form, "Code")
        to, sid = form.get("To"), form.get("VerificationSid")
        if to is None and sid is None:
            raise invalid_parameter("To", "either To or VerificationSid must be specified")
        if sid is not None:
            await call.own(self._service, sid)  # another service's is not found here
        amount, payee = form.get("Amount"), form.get("Payee")
        by_email = to is not None and "@" in to  # Twilio's To is an address for email
        try:
            verified = await self._service.verify_code(
                to,
                code,
                call.window,
                purpose=purpose_of(amount, payee),
                verification_id=sid,
                kind="email" if by_email else "phone",
            )
        except NoPendingCode:
            raise
        except InvalidCode as exc:
            # A wrong code: the verification as it stands, pending (or, after the last
            # allowed attempt, max_attempts_reached), not valid.
            vid = exc.compared_verification_id or sid
            if vid is None:
                raise
            try:
                record = await self._service.verification(vid)
            except VerificationNotFound:
                raise exc from None
            if exc.phone is not None:
                note_phone(exc.phone.masked())
            note_error_code(exc.code)
            return json_answer(call.body(record)), exc.window_hit
        note_phone(verified.phone.masked())
        try:
            record = await self._service.verification(verified.verification_id)
        except (VerificationNotFound, StoreUnavailable):
            # Approved all the same: the answer is built from what the verify returned.
            now = self._clock()
            record = Verification(
                verified.verification_id,
                verified.phone.key,
                "approved",
                "email" if by_email else "sms",
                None,
                now,
                now,
                now,
                call.details(amount, payee),
            )
        return json_answer(call.body(record)), verified.window_hit

    async def _fetch(self, request: Request, call: Call) -> Outcome:
        sid = call.sid_of(request)
        hit = await self._limiter.admit(call.window)
        try:
            record = await call.own(self._service, sid)
        except OtpError as exc:
            raise _with_hit(exc, hit) from None
        return json_answer(call.body(record)), hit

    async def _update(self, request: Request, call: Call) -> Outcome:
        """``Status=canceled`` stops the code; ``approved`` approves without one (the app
        proved the user another way). Either stops a pending verification's code."""
        sid = call.sid_of(request)
        status = required(call.form, "Status")
        if status not in ("canceled", "approved"):
            raise invalid_parameter("Status", "canceled or approved")
        hit = await self._limiter.admit(call.window)
        try:
            await call.own(self._service, sid)
            if status == "canceled":
                record = await self._service.cancel(sid)
            else:
                record = await self._service.approve(sid)
        except OtpError as exc:
            raise _with_hit(exc, hit) from None
        return json_answer(call.body(record)), hit


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated request: its service, its form and its per-IP window."""

    config: VerifyV2Config
    service_sid: str
    form: Form
    client_key: str
    window: RequestWindow
    base_url: str

    def path(self, sid: str) -> str:
        return f"/v2/Services/{self.service_sid}/Verifications/{sid}"

    def sid_of(self, request: Request) -> str:
        sid = str(request.path_params.get("sid", ""))
        if not _VERIFICATION_ID.match(sid):
            raise not_found(self.path(sid))
        return sid

    def details(self, amount: str | None, payee: str | None) -> str:
        """What a verification keeps: its service, and the amount and payee it binds."""
        for name, value in (("Amount", amount), ("Payee", payee)):
            if value is not None and len(value) > DETAIL_MAX:
                raise invalid_parameter(name, f"at most {DETAIL_MAX} characters")
        kept = {"service": self.service_sid, "amount": amount, "payee": payee}
        return orjson.dumps({k: v for k, v in kept.items() if v is not None}).decode()

    async def own(self, service: OtpService, sid: str) -> Verification:
        """The verification ``sid`` when it is this service's (or was opened by the
        otpgate routes, which name no service); 404 otherwise."""
        if not _VERIFICATION_ID.match(sid):
            raise not_found(self.path(sid))
        record = await service.verification(sid)
        if _kept(record).get("service", self.service_sid) != self.service_sid:
            raise not_found(self.path(sid))
        return record

    def body(self, record: Verification) -> dict[str, Any]:
        """A verification as Twilio shows one."""
        kept = _kept(record)
        created = iso(record.created_at)
        sends = record.send_times or (record.created_at,)
        return {
            "sid": record.id,
            "service_sid": self.service_sid,
            "account_sid": self.config.account_sid,
            "to": record.phone,
            "channel": record.channel,
            "status": record.status,
            "valid": record.status == "approved",
            "amount": kept.get("amount"),
            "payee": kept.get("payee"),
            "send_code_attempts": [
                {
                    "attempt_sid": _attempt_sid(record.id, n),
                    "channel": record.channel,
                    "time": iso(t),
                }
                for n, t in enumerate(sends)
            ],
            "lookup": {},
            "sna": None,
            "date_created": created,
            "date_updated": iso(record.updated_at),
            "url": f"{self.base_url}{self.path(record.id)}",
        }


def _kept(record: Verification) -> dict[str, str]:
    """What ``Call.details`` kept with a verification (nothing for the otpgate routes')."""
    if not record.details:
        return {}
    try:
        kept = orjson.loads(record.details)
    except orjson.JSONDecodeError:
        return {}
    return {k: v for k, v in kept.items() if isinstance(v, str)} if isinstance(kept, dict) else {}


def _attempt_sid(verification_id: str, n: int) -> str:
    """A stable id for the ``n``-th send of a verification (``VL`` + 32 hex)."""
    return "VL" + hashlib.sha256(f"{verification_id}:{n}".encode()).hexdigest()[:32]


def _checked(form: Form, name: str, check: Callable[[str], str]) -> str | None:
    """An optional parameter, refused as Twilio's invalid parameter when ``check`` fails."""
    value = form.get(name)
    if value is None or value == "":
        return None
    try:
        return check(value)
    except ValueError as exc:
        raise invalid_parameter(name, str(exc)) from None


def _check_locale(value: str) -> str:
    if not is_locale(value):
        raise ValueError("a BCP 47 language tag, such as es or pt-BR")
    return value


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with_hit(exc: OtpError, hit: WindowHit | None) -> OtpError:
    exc.window_hit = hit
    return exc


def required(form: Form, name: str) -> str:
    value = form.get(name)
    if value is None or value == "":
        raise invalid_parameter(name, "required")
    return value


def _address(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def _base_url(request: Request) -> str:
    url = request.url
    return f"{url.scheme}://{url.netloc}"


def _authorized(config: VerifyV2Config, authorization: bytes | None) -> bool:
    """HTTP Basic with the account sid and its auth token; both compared in constant
    time, and both always (no early exit on a wrong sid)."""
    if not authorization:
        return False
    scheme, _, encoded = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, password = decoded.partition(b":")
    if not sep:
        return False
    sid_ok = hmac.compare_digest(user, config.account_sid.encode())
    token_ok = digest_matches(password, config.token_digest)
    return sid_ok and token_ok


async def _read_form(request: Request, max_bytes: int) -> Form:
    """The form-encoded body (none for a GET): each parameter once, as text."""
    if request.method == "GET":
        return {}
    content_type = b""
    for name, value in request.scope["headers"]:
        if name == b"content-type":
            content_type = value
            break
    try:
        body = await read_body(request, max_bytes)
    except BodyTooLarge:
        raise TwilioError(413, 60200, "Invalid parameter: the body is too large") from None
    if not body:
        return {}
    if content_type.split(b";", 1)[0].strip().lower() != FORM:
        raise TwilioError(
            400, 60200, "Invalid parameter: the body must be application/x-www-form-urlencoded"
        )
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise TwilioError(400, 60200, "Invalid parameter: the body is not a form") from None
    form: Form = {}
    for name, values in parsed.items():
        if len(values) != 1:
            raise invalid_parameter(name, "given more than once")
        form[name] = values[0]
    return form


def _caller_headers(scope: Any) -> tuple[str | None, bytes | None]:
    """The first X-Forwarded-For, and Authorization (a repeated one reads as empty)."""
    forwarded: bytes | None = None
    authorization: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            if forwarded is None:
                forwarded = value
        elif name == b"authorization":
            authorization = value if authorization is None else b""
    return (forwarded.decode("latin-1") if forwarded is not None else None, authorization)
