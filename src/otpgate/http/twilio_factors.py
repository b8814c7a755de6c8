"""Twilio Verify's TOTP resources on the v2 routes: Entities, their Factors and their
Challenges, under ``/v2/Services/{ServiceSid}/Entities``.

The same authentication, error shape and per-IP windows as the Verifications routes
(``twilio_verify.py``, whose endpoint wrapper runs these handlers), over the factor use
cases (``domain.factors.service``): a Twilio entity is an identity of the factors, named
``{ServiceSid}:{Identity}`` so that one service never sees another's. A factor's
``binding`` (its secret and ``otpauth://`` URI) is in the create answer only. A wrong
code, a replayed one and a code for a factor not yet verified are all answered as
Twilio answers a wrong TOTP code: the factor stays ``unverified``, the challenge
``pending``; too many of them lock the identity out as on the native routes (429 60202).
Each route counts once in the per-IP window of the native factor route it matches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from otpgate.domain.errors import InvalidCode, OtpError
from otpgate.domain.factors.errors import FactorAlreadyVerified, InvalidIdentity
from otpgate.domain.factors.ports import ChallengePage
from otpgate.domain.factors.service import FactorService
from otpgate.domain.factors.values import Challenge, Entity, Factor, TotpConfig, parse_identity
from otpgate.domain.request_limit import RequestLimiter
from otpgate.http.twilio_verify import (
    PREFIX,
    Call,
    Endpoint,
    Form,
    Handler,
    Outcome,
    TwilioError,
    error_response,
    invalid_parameter,
    iso,
    json_answer,
    not_found,
    required,
)

ENTITY = f"{PREFIX}/Entities/{{identity}}"
# Twilio's limits: an identity of up to 64 characters, a friendly name of up to 64, a
# challenge alive 5 minutes unless told (60 at most), pages of up to 1000.
IDENTITY_MAX = 64
NAME_MAX = 64
CHALLENGE_TTL = 300.0
CHALLENGE_TTL_MAX = 3600.0
PAGE_SIZE = 50
PAGE_SIZE_MAX = 1000
# Twilio's ranges for each TOTP setting, and the domain's field each sets.
TOTP_RANGES = {
    "Config.TimeStep": ("period", 20, 60),
    "Config.Skew": ("skew", 0, 2),
    "Config.CodeLength": ("digits", 3, 8),
}
ALGORITHMS = {"sha1": "SHA1", "sha256": "SHA256", "sha512": "SHA512"}
CHALLENGE_STATUSES = ("pending", "expired", "approved", "denied")
NO_STORE = {"cache-control": "no-store"}

Act = Callable[[Request, Call], Awaitable[Response]]
T = TypeVar("T")


class TwilioFactorApi:
    def __init__(self, factors: FactorService, limiter: RequestLimiter, clock: Callable[[], float]):
        self._factors = factors
        self._limiter = limiter
        self._clock = clock

    def routes(self, endpoint: Endpoint) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of each route, each wrapped by ``endpoint`` with the
        native factor route whose per-IP window it counts in."""
        factors, challenges = f"{ENTITY}/Factors", f"{ENTITY}/Challenges"
        table: list[tuple[str, str, str, Act]] = [
            ("POST", f"{PREFIX}/Entities", "factor-enrol", self._create_entity),
            ("GET", f"{PREFIX}/Entities", "factors", self._list_entities),
            ("GET", ENTITY, "factors", self._fetch_entity),
            ("DELETE", ENTITY, "factor-delete", self._delete_entity),
            ("POST", factors, "factor-enrol", self._create_factor),
            ("GET", factors, "factors", self._list_factors),
            ("GET", f"{factors}/{{sid}}", "factors", self._fetch_factor),
            ("POST", f"{factors}/{{sid}}", "factor-verify", self._update_factor),
            ("DELETE", f"{factors}/{{sid}}", "factor-delete", self._delete_factor),
            ("POST", challenges, "challenge", self._create_challenge),
            ("GET", challenges, "factors", self._list_challenges),
            ("GET", f"{challenges}/{{sid}}", "factors", self._fetch_challenge),
            ("POST", f"{challenges}/{{sid}}", "challenge", self._update_challenge),
        ]
        return [
            (method, path, endpoint(route, self._counted(act)))
            for method, path, route, act in table
        ]

    def _counted(self, act: Act) -> Callable[[Request, Call], Awaitable[Outcome]]:
        """One hit on the window, then ``act``; a refusal carries the hit's headers (and
        a malformed request is not counted twice)."""

        async def handle(request: Request, call: Call) -> Outcome:
            hit = await self._limiter.admit(call.window)
            try:
                response = await act(request, call)
            except TwilioError as exc:
                return error_response(exc), hit
            except OtpError as exc:
                exc.window_hit = hit
                raise
            response.headers.update(NO_STORE)
            return response, hit

        return handle

    # --- entities -------------------------------------------------------------------------

    async def _create_entity(self, request: Request, call: Call) -> Response:
        name = _entity_name(required(call.form, "Identity"))
        entity = await self._factors.add_entity(call.service_sid, name, _identity(call, name))
        return json_answer(_Shapes(call).entity(entity), 201)

    async def _list_entities(self, request: Request, call: Call) -> Response:
        page = _Paging.of(request)
        found = await self._factors.entities(call.service_sid, page.offset, page.size + 1)
        shapes = _Shapes(call)
        return json_answer(page.answer(request, call, "entities", found, shapes.entity))

    async def _fetch_entity(self, request: Request, call: Call) -> Response:
        entity = await self._entity(request, call)
        return json_answer(_Shapes(call).entity(entity))

    async def _delete_entity(self, request: Request, call: Call) -> Response:
        entity = await self._entity(request, call)
        if not await self._factors.delete_entity(entity):
            raise not_found(_Shapes(call).entity_path(entity.name))
        return Response(status_code=204)

    async def _entity(self, request: Request, call: Call) -> Entity:
        name = str(request.path_params.get("identity", ""))
        entity = await self._factors.entity(call.service_sid, name)
        if entity is None:
            raise not_found(_Shapes(call).entity_path(name))
        return entity

    # --- factors --------------------------------------------------------------------------

    async def _create_factor(self, request: Request, call: Call) -> Response:
        form = call.form
        name = _entity_name(str(request.path_params.get("identity", "")))
        friendly = required(form, "FriendlyName")
        if len(friendly) > NAME_MAX:
            raise invalid_parameter("FriendlyName", f"at most {NAME_MAX} characters")
        if required(form, "FactorType") != "totp":
            raise invalid_parameter("FactorType", "otpgate serves totp factors only")
        if form.get("Binding.Secret"):
            raise invalid_parameter("Binding.Secret", "otpgate makes every secret itself")
        config = _totp_config(form, self._factors.policy.totp)
        # Twilio makes the entity of a first factor.
        entity = await self._factors.add_entity(call.service_sid, name, _identity(call, name))
        enrolment = await self._factors.enrol(
            entity.identity,
            friendly,
            config,
            account=friendly,
            issuer=call.config.services[call.service_sid],
        )
        body = _Shapes(call).factor(entity, enrolment.factor)
        body["binding"] = {"secret": enrolment.secret, "uri": enrolment.uri}
        return json_answer(body, 201)

    async def _list_factors(self, request: Request, call: Call) -> Response:
        page = _Paging.of(request)
        entity = await self._entity(request, call)
        found = await self._factors.factors(entity.identity)
        shown = found[page.offset : page.offset + page.size + 1]
        shapes = _Shapes(call)
        return json_answer(
            page.answer(request, call, "factors", shown, lambda f: shapes.factor(entity, f))
        )

    async def _fetch_factor(self, request: Request, call: Call) -> Response:
        entity, factor = await self._factor(request, call)
        return json_answer(_Shapes(call).factor(entity, factor))

    async def _update_factor(self, request: Request, call: Call) -> Response:
        """``AuthPayload`` verifies an unverified factor; a wrong code leaves it as it was
        (200, ``unverified``), as Twilio answers since its TOTP left beta."""
        form = call.form
        for name in form:
            if name not in {"AuthPayload", "DeviceIp"}:
                raise invalid_parameter(name, "otpgate changes a factor by AuthPayload only")
        entity, factor = await self._factor(request, call)
        code = form.get("AuthPayload")
        if code is not None:
            _check_payload(code)
            try:
                factor = await self._factors.activate(entity.identity, factor.id, code)
            except FactorAlreadyVerified:
                pass  # nothing to change: answered as it stands
            except InvalidCode:
                factor = await self._factors.factor(entity.identity, factor.id)
        return json_answer(_Shapes(call).factor(entity, factor))

    async def _delete_factor(self, request: Request, call: Call) -> Response:
        entity, factor = await self._factor(request, call)
        await self._factors.delete(entity.identity, factor.id)
        return Response(status_code=204)

    async def _factor(self, request: Request, call: Call) -> tuple[Entity, Factor]:
        entity = await self._entity(request, call)
        return entity, await _owned(call, entity, "Factors", self._factors.factor, _sid(request))

    # --- challenges -----------------------------------------------------------------------

    async def _create_challenge(self, request: Request, call: Call) -> Response:
        form = call.form
        factor_sid = required(form, "FactorSid")
        code = form.get("AuthPayload")
        if code is not None:
            _check_payload(code)
        ttl = self._ttl(form.get("ExpirationDate"))
        entity = await self._entity(request, call)
        await _owned(call, entity, "Factors", self._factors.factor, factor_sid)
        kept = await self._factors.open_challenge(entity.identity, factor_sid, code, ttl)
        return json_answer(_Shapes(call).challenge(entity, kept, self._clock()), 201)

    async def _list_challenges(self, request: Request, call: Call) -> Response:
        page = _Paging.of(request)
        query = request.query_params
        status = query.get("Status")
        if status is not None and status not in CHALLENGE_STATUSES:
            raise invalid_parameter("Status", ", ".join(CHALLENGE_STATUSES))
        order = query.get("Order", "asc")
        if order not in ("asc", "desc"):
            raise invalid_parameter("Order", "asc or desc")
        entity = await self._entity(request, call)
        now = self._clock()
        selected = ChallengePage(
            page.offset,
            page.size + 1,
            now,
            factor_id=query.get("FactorSid"),
            status=cast(Literal["pending", "approved", "expired", "denied"] | None, status),
            newest_first=order == "desc",
        )
        found = await self._factors.kept_challenges(entity.identity, selected)
        shapes = _Shapes(call)
        return json_answer(
            page.answer(
                request, call, "challenges", found, lambda c: shapes.challenge(entity, c, now)
            )
        )

    async def _fetch_challenge(self, request: Request, call: Call) -> Response:
        entity, kept = await self._challenge(request, call)
        return json_answer(_Shapes(call).challenge(entity, kept, self._clock()))

    async def _update_challenge(self, request: Request, call: Call) -> Response:
        """``AuthPayload`` for a pending challenge: approved when right."""
        code = required(call.form, "AuthPayload")
        _check_payload(code)
        entity, kept = await self._challenge(request, call)
        kept = await self._factors.respond(entity.identity, kept.id, code)
        return json_answer(_Shapes(call).challenge(entity, kept, self._clock()))

    async def _challenge(self, request: Request, call: Call) -> tuple[Entity, Challenge]:
        entity = await self._entity(request, call)
        find = self._factors.kept_challenge
        return entity, await _owned(call, entity, "Challenges", find, _sid(request))

    def _ttl(self, expiration: str | None) -> float:
        """Seconds from now to ``ExpirationDate`` (ISO 8601, UTC unless it says), 5
        minutes without one."""
        if expiration is None or expiration == "":
            return CHALLENGE_TTL
        try:
            when = datetime.fromisoformat(expiration.replace("Z", "+00:00"))
        except ValueError:
            raise invalid_parameter("ExpirationDate", "an ISO 8601 date and time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        ttl = when.timestamp() - self._clock()
        if not 0 < ttl <= CHALLENGE_TTL_MAX:
            raise invalid_parameter("ExpirationDate", "in the next 60 minutes")
        return ttl


class _Shapes:
    """Entities, factors and challenges as Twilio shows them."""

    def __init__(self, call: Call) -> None:
        self._call = call

    def entity_path(self, name: str) -> str:
        return f"/v2/Services/{self._call.service_sid}/Entities/{name}"

    def _common(self) -> dict[str, Any]:
        return {
            "account_sid": self._call.config.account_sid,
            "service_sid": self._call.service_sid,
        }

    def entity(self, entity: Entity) -> dict[str, Any]:
        url = f"{self._call.base_url}{self.entity_path(entity.name)}"
        return {
            "sid": entity.id,
            "identity": entity.name,
            **self._common(),
            "date_created": iso(entity.created_at),
            "date_updated": iso(entity.created_at),
            "url": url,
            "links": {
                "factors": f"{url}/Factors",
                "new_factors": f"{url}/Factors",
                "challenges": f"{url}/Challenges",
            },
        }

    def factor(self, entity: Entity, factor: Factor) -> dict[str, Any]:
        config = factor.config
        return {
            "sid": factor.id,
            **self._common(),
            "entity_sid": entity.id,
            "identity": entity.name,
            "date_created": iso(factor.created_at),
            "date_updated": iso(factor.verified_at or factor.created_at),
            "friendly_name": factor.name,
            "status": factor.status,
            "factor_type": factor.kind,
            "config": {
                "alg": config.algorithm.lower(),
                "skew": config.skew,
                "code_length": config.digits,
                "time_step": config.period,
            },
            "metadata": None,
            "url": f"{self._call.base_url}{self.entity_path(entity.name)}/Factors/{factor.id}",
        }

    def challenge(self, entity: Entity, kept: Challenge, now: float) -> dict[str, Any]:
        expired = kept.status == "pending" and kept.expires_at <= now
        url = f"{self._call.base_url}{self.entity_path(entity.name)}/Challenges/{kept.id}"
        return {
            "sid": kept.id,
            **self._common(),
            "entity_sid": entity.id,
            "identity": entity.name,
            "factor_sid": kept.factor_id,
            "date_created": iso(kept.created_at),
            "date_updated": iso(kept.updated_at),
            "date_responded": iso(kept.responded_at) if kept.responded_at is not None else None,
            "expiration_date": iso(kept.expires_at),
            "status": "expired" if expired else kept.status,
            "responded_reason": "none",
            "details": None,
            "hidden_details": None,
            "metadata": None,
            "factor_type": "totp",
            "url": url,
            "links": {"notifications": f"{url}/Notifications"},
        }


class _Paging:
    """Twilio's paging: ``Page`` (from 0) and ``PageSize``, and a ``meta`` with the
    URLs of this page, the first, the previous and the next (None on the last)."""

    def __init__(self, number: int, size: int) -> None:
        self.number = number
        self.size = size
        self.offset = number * size

    @classmethod
    def of(cls, request: Request) -> _Paging:
        query = request.query_params
        number = _whole(query.get("Page"), "Page", 0, 1_000_000, 0)
        size = _whole(query.get("PageSize"), "PageSize", 1, PAGE_SIZE_MAX, PAGE_SIZE)
        return cls(number, size)

    def answer(
        self,
        request: Request,
        call: Call,
        key: str,
        found: list[Any],
        shape: Callable[[Any], dict[str, Any]],
    ) -> dict[str, Any]:
        """``found`` is one more than a page when there is a next page."""
        kept = [(k, v) for k, v in request.query_params.items() if k not in _PAGE_PARAMS]
        base = f"{call.base_url}{request.url.path}"

        def url(number: int) -> str:
            return f"{base}?{urlencode([*kept, ('PageSize', self.size), ('Page', number)])}"

        more = len(found) > self.size
        return {
            key: [shape(item) for item in found[: self.size]],
            "meta": {
                "page": self.number,
                "page_size": self.size,
                "first_page_url": url(0),
                "previous_page_url": url(self.number - 1) if self.number else None,
                "url": url(self.number),
                "next_page_url": url(self.number + 1) if more else None,
                "key": key,
            },
        }


_PAGE_PARAMS = ("Page", "PageSize", "PageToken")


async def _owned(
    call: Call, entity: Entity, kind: str, find: Callable[[str, str], Awaitable[T]], sid: str
) -> T:
    """The entity's factor or challenge ``sid``: 404 20404 when it has none."""
    try:
        return await find(entity.identity, sid)
    except OtpError:
        raise not_found(f"{_Shapes(call).entity_path(entity.name)}/{kind}/{sid}") from None


def _sid(request: Request) -> str:
    return str(request.path_params.get("sid", ""))


def _whole(value: str | None, name: str, low: int, high: int, default: int) -> int:
    if value is None or value == "":
        return default
    if not value.isascii() or not value.isdigit() or not low <= int(value) <= high:
        raise invalid_parameter(name, f"a whole number from {low} to {high}")
    return int(value)


def _entity_name(name: str) -> str:
    """A Twilio identity: up to 64 of the characters an otpgate identity may hold."""
    try:
        parse_identity(name)
    except InvalidIdentity:
        raise invalid_parameter("Identity", "1 to 64 letters, digits or _ . @ : + -") from None
    if len(name) > IDENTITY_MAX:
        raise invalid_parameter("Identity", f"at most {IDENTITY_MAX} characters")
    return name


def _identity(call: Call, name: str) -> str:
    """The factors' identity of a service's entity: one service never sees another's."""
    return f"{call.service_sid}:{name}"


def _check_payload(code: str) -> None:
    if not 3 <= len(code) <= 8:
        raise invalid_parameter("AuthPayload", "3 to 8 characters")


def _totp_config(form: Form, defaults: TotpConfig) -> TotpConfig:
    """``Config.*`` over the service's defaults, each in Twilio's range; a code length
    otpgate does not make (under 6) is refused, saying so."""
    given: dict[str, Any] = {}
    for name, (field, low, high) in TOTP_RANGES.items():
        value = form.get(name)
        if value is not None:
            given[field] = _whole(value, name, low, high, 0)
    alg = form.get("Config.Alg")
    if alg is not None:
        if alg.lower() not in ALGORITHMS:
            raise invalid_parameter("Config.Alg", "sha1, sha256 or sha512")
        given["algorithm"] = ALGORITHMS[alg.lower()]
    if given.get("digits", 6) < 6:
        raise invalid_parameter("Config.CodeLength", "otpgate makes codes of 6 to 8 digits")
    return replace(defaults, **given)
