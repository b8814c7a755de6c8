"""Who is calling: the API key in ``Authorization: Bearer``, and the end user it names.

Both HTTP paths (``FastRoutes`` and Starlette's routing) call the same API handlers
(``http/api.py``), which run these checks first, before any body is read or any
store step is taken: a refused request costs one SHA-256 and no store round trip.
A key is never logged or put in an answer; only its configured name is noted for
the access line.
"""

from __future__ import annotations

import ipaddress

from starlette.responses import Response

from otpgate.config.api_keys import ApiAuth
from otpgate.http.errors import HttpError, http_error_response

MISSING_KEY = "An API key is required: send Authorization: Bearer <key>."
CHALLENGE = {"www-authenticate": "Bearer"}


def key_name(auth: ApiAuth, authorization: bytes | None) -> str | None:
    """The name of the valid key ``authorization`` carries, else None.

    Only ``Bearer <key>`` is read (the scheme in any case); anything else in the header,
    another scheme or an empty key, carries no valid key.
    """
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    token = token.strip()
    return auth.name_of(token) if token else None


def unauthorized(sent: bool) -> Response:
    """401 ``invalid_api_key``: a key was sent and is not valid, or none was and one is due."""
    error = HttpError("invalid_api_key") if sent else HttpError("invalid_api_key", MISSING_KEY)
    return http_error_response(error, CHALLENGE)


def end_user_address(value: bytes) -> str | None:
    """X-End-User-IP as one address in its canonical form, or None when it is not one."""
    try:
        return str(ipaddress.ip_address(value.decode("ascii").strip()))
    except (UnicodeDecodeError, ValueError):
        return None
