"""What the request being handled has learned about itself so far.

The access log and the request metrics are written once, when the response is
done; the few facts they need from deeper layers (the machine code of an error,
whether a verify found a live code) are left here on the way. One small mutable
object per request, reached through a context variable, so nothing has to be
threaded through the domain's signatures.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class RequestInfo:
    request_id: str
    # Machine code of the error body sent, if any (``invalid_code``...).
    error_code: str | None = None
    # Verify only: whether the store held a live code for the phone.
    code_found: bool | None = None
    # The recipient the request was about, already masked: a phone, or an email address
    # (the access line labels it ``email``, by its ``@``).
    phone: str | None = None
    # The client address as the per-IP limit resolved it, so it is resolved once.
    client_ip: str | None = None
    # The name of the valid API key the request carried (never the key).
    api_key_name: str | None = None
    # The end user's address a keyed caller named in X-End-User-IP, as the limits used it.
    end_user_ip: str | None = None


current_request: ContextVar[RequestInfo | None] = ContextVar("otpgate_request", default=None)


def note_error_code(code: str) -> None:
    info = current_request.get()
    if info is not None:
        info.error_code = code


def note_code_found(found: bool) -> None:
    info = current_request.get()
    if info is not None:
        info.code_found = found


def note_phone(masked: str) -> None:
    info = current_request.get()
    if info is not None:
        info.phone = masked


def note_client_ip(address: str) -> None:
    info = current_request.get()
    if info is not None:
        info.client_ip = address


def note_api_key_name(name: str) -> None:
    info = current_request.get()
    if info is not None:
        info.api_key_name = name


def note_end_user_ip(address: str) -> None:
    info = current_request.get()
    if info is not None:
        info.end_user_ip = address
