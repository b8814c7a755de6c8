"""``/.well-known/jwks.json``: the public keys that check a verify's token.

Every key of TOKEN_SIGNING_KEYS_FILE is published, the signing one first, so a
token signed before a rotation still checks out while its key stays in the file.
The document is built once; backends may cache it for ``MAX_AGE_SECONDS``.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from otpgate.tokens.keys import KeySet

JWKS_PATH = "/.well-known/jwks.json"
# A key added to the file is published at the next restart; a new signing key should
# be published at least this long before it signs (README: key rotation).
MAX_AGE_SECONDS = 300


def jwks_route(keys: KeySet) -> Route:
    body = orjson.dumps(keys.jwks())
    headers = {"cache-control": f"public, max-age={MAX_AGE_SECONDS}"}

    async def jwks(_: Request) -> Response:
        return Response(body, headers=headers, media_type="application/json")

    return Route(JWKS_PATH, jwks, methods=["GET"])
