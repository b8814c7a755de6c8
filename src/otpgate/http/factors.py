"""The factor routes under ``/api/v1/identities/{identity}/``: authenticator apps and
recovery codes for an app's own user ids.

Each needs a valid API key whatever API_AUTH says (they manage a user's credentials),
and counts in the per-IP limit, through the same wrapper as the code routes
(``OtpApi.limited``). A factor's secret is in one answer only, the enrolment's; a
recovery code only in the answer that made its set.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import segno
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from otpgate.components import Components
from otpgate.domain.errors import OtpError
from otpgate.domain.factors.service import Approved, Enrolment
from otpgate.domain.factors.values import Factor
from otpgate.domain.ports import RequestWindow
from otpgate.http.api import Handler, OtpApi, Outcome, json_response
from otpgate.http.body import read_json_body
from otpgate.http.errors import HttpError
from otpgate.http.factor_schemas import ChallengeBody, EnrolFactorBody, FactorCodeBody

BASE = "/api/v1/identities/{identity}"
ONE_OF = "body must have 'factorId' and 'code', or 'recoveryCode'."
_NO_STORE = {"cache-control": "no-store"}


class FactorApi:
    def __init__(self, components: Components, api: OtpApi) -> None:
        self._factors = components.factors
        self._limiter = components.rate_limiter
        self._api = api
        self._max_body = components.http.max_body_bytes

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of every factor route."""
        guarded = self._guarded
        one = f"{BASE}/factors/{{factor_id}}"
        return [
            ("POST", f"{BASE}/factors", guarded("factor-enrol", self._enrol)),
            ("GET", f"{BASE}/factors", guarded("factors", self._list)),
            ("POST", f"{one}/verify", guarded("factor-verify", self._verify)),
            ("DELETE", one, guarded("factor-delete", self._delete)),
            ("POST", f"{BASE}/challenges", guarded("challenge", self._challenge)),
            ("POST", f"{BASE}/recovery-codes", guarded("recovery-codes", self._new_codes)),
            ("GET", f"{BASE}/recovery-codes", guarded("recovery-codes", self._codes_left)),
        ]

    def starlette_routes(self) -> list[Route]:
        """One route per path, whatever its methods, so that a 405's Allow lists them all."""
        by_path: dict[str, dict[str, Handler]] = {}
        for method, path, handler in self.routes():
            by_path.setdefault(path, {})[method] = handler
        return [
            Route(path, _by_method(handlers), methods=list(handlers))
            for path, handlers in by_path.items()
        ]

    def _guarded(self, route: str, act: Callable[[Request], Awaitable[Response]]) -> Handler:
        """The API key (always required) and one hit on the per-IP limit, then ``act``."""

        async def handle(request: Request, client: str, window: RequestWindow) -> Outcome:
            hit = await self._limiter.admit(window)
            try:
                response: Response = await act(request)
            except OtpError as exc:
                exc.window_hit = hit  # the answer carries the limit's headers
                raise
            response.headers.update(_NO_STORE)
            return response, hit

        return self._api.limited(route, handle, key_required=True)

    async def _enrol(self, request: Request) -> Response:
        body = await read_json_body(request, EnrolFactorBody, self._max_body)
        enrolment = await self._factors.enrol(_identity(request), body.name)
        return json_response(_enrolment(enrolment), 201)

    async def _list(self, request: Request) -> Response:
        found = await self._factors.factors(_identity(request))
        return json_response({"factors": [factor_body(f) for f in found]})

    async def _verify(self, request: Request) -> Response:
        body = await read_json_body(request, FactorCodeBody, self._max_body)
        factor = await self._factors.activate(_identity(request), _factor_id(request), body.code)
        return json_response(factor_body(factor))

    async def _delete(self, request: Request) -> Response:
        await self._factors.delete(_identity(request), _factor_id(request))
        return Response(status_code=204)

    async def _challenge(self, request: Request) -> Response:
        body = await read_json_body(request, ChallengeBody, self._max_body)
        identity = _identity(request)
        approved: Approved
        if body.recoveryCode is not None:
            if body.factorId is not None or body.code is not None:
                raise HttpError("invalid_body", ONE_OF)
            approved = await self._factors.use_recovery_code(identity, body.recoveryCode)
        elif body.factorId is not None and body.code is not None:
            approved = await self._factors.challenge(identity, body.factorId, body.code)
        else:
            raise HttpError("invalid_body", ONE_OF)
        answer: dict[str, Any] = {
            "success": True,
            "token": approved.token,
            "method": approved.method,
        }
        if approved.factor_id is not None:
            answer["factorId"] = approved.factor_id
        if approved.recovery_codes_left is not None:
            answer["recoveryCodesLeft"] = approved.recovery_codes_left
        return json_response(answer)

    async def _new_codes(self, request: Request) -> Response:
        codes = await self._factors.new_recovery_codes(_identity(request))
        return json_response({"codes": codes, "remaining": len(codes)}, 201)

    async def _codes_left(self, request: Request) -> Response:
        left = await self._factors.recovery_codes_left(_identity(request))
        return json_response({"remaining": left})


async def _missing(request: Request) -> Response:
    raise AssertionError("unreachable: Starlette answers 405 for a method not listed")


def _by_method(handlers: dict[str, Handler]) -> Handler:
    async def dispatch(request: Request) -> Response:
        # HEAD is answered as GET is (Starlette adds it to every GET route).
        return await handlers.get(request.method, handlers.get("GET", _missing))(request)

    return dispatch


def _identity(request: Request) -> str:
    return str(request.path_params.get("identity", ""))


def _factor_id(request: Request) -> str:
    return str(request.path_params.get("factor_id", ""))


def factor_body(factor: Factor) -> dict[str, Any]:
    """A factor as every answer shows it: never its secret."""
    return {
        "id": factor.id,
        "identity": factor.identity,
        "type": factor.kind,
        "status": factor.status,
        "name": factor.name,
        "digits": factor.config.digits,
        "period": factor.config.period,
        "algorithm": factor.config.algorithm,
        "createdAt": iso(factor.created_at),
        "verifiedAt": iso(factor.verified_at) if factor.verified_at is not None else None,
    }


def _enrolment(enrolment: Enrolment) -> dict[str, Any]:
    qr = segno.make(enrolment.uri, error="m")
    svg = io.BytesIO()
    qr.save(svg, kind="svg", xmldecl=False, nl=False, scale=4)
    return {
        **factor_body(enrolment.factor),
        "secret": enrolment.secret,
        "uri": enrolment.uri,
        "qrSvg": svg.getvalue().decode(),
    }


def iso(epoch: float) -> str:
    when = datetime.fromtimestamp(epoch, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
