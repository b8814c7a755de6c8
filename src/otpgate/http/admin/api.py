"""The operators' API under ``/admin/v1/``: see what the defences hold, and undo it.

Every route needs a key from ADMIN_API_KEYS (``Authorization: Bearer``), checked as API
keys are (``api_keys.ApiAuth``); while that is unset there are no routes at all (404).
The admin keys are never API keys (settings refuse one that is), so a backend's key
cannot lift a block. Answers hold phone numbers, so none may be cached.

An identity's second factors can be listed (never a secret) and one deleted, for a user
who lost the phone and their recovery codes.

Each change an operator makes (a block lifted, an override list edited, a factor
deleted) writes one
line on the ``otpgate.audit`` logger: who (the key's configured name, never the key),
what, and when. A phone number in a block's scope is masked there, as in every log.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, get_args

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from otpgate.components import Components
from otpgate.domain.admin import BlockNotFound, InvalidOverride, is_override_entry
from otpgate.domain.errors import OtpError
from otpgate.domain.phone import mask
from otpgate.domain.ports import Block, OverrideList, RangeStats, Verification
from otpgate.domain.recipient import is_email_key, mask_key
from otpgate.http.api import json_response
from otpgate.http.auth import CHALLENGE, key_name
from otpgate.http.errors import STATUS_BY_CODE, HttpError, error_response, http_error_response
from otpgate.http.factors import factor_body
from otpgate.observability.request_context import note_api_key_name, note_phone

audit_log = logging.getLogger("otpgate.audit")

PREFIX = "/admin/v1"
MISSING_KEY = "An admin key is required: send Authorization: Bearer <key>."

# The admin routes' own refusals, beside the codes any use case may raise. Kept apart
# from STATUS_BY_CODE: the public API (and so the widget) never answers them.
ADMIN_CODES: dict[str, tuple[int, str]] = {
    BlockNotFound.code: (404, BlockNotFound.message),
    InvalidOverride.code: (400, InvalidOverride.message),
    "override_not_found": (404, "That entry is not on that override list."),
}

Handler = Callable[[Request], Awaitable[Response]]
Action = Callable[[Request, str], Awaitable[Response]]

_NO_STORE = {"cache-control": "no-store"}


class AdminApi:
    def __init__(self, components: Components) -> None:
        self._admin = components.admin
        self._factors = components.factors
        self._auth = components.admin_auth
        self._clock = components.clock
        config = components.http.admin
        self._send_limit = config.send_limit
        self._send_window = config.send_window_seconds
        self._max_attempts = config.max_attempts

    def routes(self) -> list[BaseRoute]:
        """Every admin route; none while ADMIN_API_KEYS is unset."""
        if not self._auth.keys:
            return []
        lift = self._keyed(self._lift)
        routes: list[BaseRoute] = [
            Route(f"{PREFIX}/blocks", self._keyed(self._blocks), methods=["GET"]),
            Route(f"{PREFIX}/blocks/{{kind}}/{{scope}}", lift, methods=["DELETE"]),
            Route(f"{PREFIX}/phones/{{phone}}", self._keyed(self._phone), methods=["GET"]),
            Route(f"{PREFIX}/overrides", self._keyed(self._overrides), methods=["GET"]),
            Route(f"{PREFIX}/stats", self._keyed(self._stats), methods=["GET"]),
            Route(
                f"{PREFIX}/identities/{{identity}}/factors",
                self._keyed(self._identity_factors),
                methods=["GET"],
            ),
            Route(
                f"{PREFIX}/identities/{{identity}}/factors/{{factor_id}}",
                self._keyed(self._delete_factor),
                methods=["DELETE"],
            ),
        ]
        for which in get_args(OverrideList):
            routes.append(
                Route(
                    f"{PREFIX}/overrides/{which}/{{entry}}",
                    self._keyed(self._override(which)),
                    methods=["GET", "PUT", "DELETE"],
                )
            )
        return routes

    def _keyed(self, act: Action) -> Handler:
        """The key check first (nothing is read before it), then ``act`` with the key's
        name; a refusal by a use case becomes its error body."""

        async def endpoint(request: Request) -> Response:
            sent = request.headers.getlist("authorization")
            # Two Authorization headers are ambiguous: neither counts.
            name = key_name(self._auth, sent[0].encode("latin-1")) if len(sent) == 1 else None
            if name is None:
                message = None if sent else MISSING_KEY
                return http_error_response(HttpError("invalid_api_key", message), CHALLENGE)
            note_api_key_name(name)
            try:
                response = await act(request, name)
            except OtpError as exc:
                status = STATUS_BY_CODE.get(exc.code) or ADMIN_CODES[exc.code][0]
                response = error_response(status, exc.code, exc.message)
            response.headers.update(_NO_STORE)
            return response

        return endpoint

    # -- blocks ----------------------------------------------------------------------------
    async def _blocks(self, request: Request, who: str) -> Response:
        # Sorted here: the port promises no order, and every store should answer alike.
        blocks = sorted(await self._admin.blocks(), key=lambda b: (b.started_at, b.kind, b.scope))
        return json_response({"blocks": [_block(b) for b in blocks]})

    async def _lift(self, request: Request, who: str) -> Response:
        kind, scope = request.path_params["kind"], request.path_params["scope"]
        lifted = await self._admin.lift(kind, scope, by=who)
        self._audit(who, "lift_block", kind=kind, scope=_log_safe(scope), reason=lifted.reason)
        return json_response({"lifted": _block(lifted)})

    # -- one phone -------------------------------------------------------------------------
    async def _phone(self, request: Request, who: str) -> Response:
        report = await self._admin.phone(request.path_params["phone"])
        state = report.state
        note_phone(mask(state.phone))
        now = self._clock()
        cooldown = state.cooldown_until
        return json_response(
            {
                "phoneNumber": state.phone,
                "codePending": state.code_pending,
                "codeExpiresAt": _iso(state.code_expires_at),
                "attempts": state.attempts,
                "maxAttempts": self._max_attempts,
                "cooldownEndsAt": _iso(cooldown),
                "cooldownSeconds": max(0, math.ceil(cooldown - now)) if cooldown else 0,
                "sendsInWindow": state.sends_in_window,
                "sendLimit": self._send_limit,
                "sendWindowSeconds": self._send_window,
                "consecutiveFailures": state.failures,
                "lastFailureAt": _iso(state.last_failure_at),
                "lockedUntil": _iso(report.locked_until),
                "verification": _verification(state.verification),
            }
        )

    # -- overrides -------------------------------------------------------------------------
    async def _overrides(self, request: Request, who: str) -> Response:
        return json_response(await self._admin.overrides())

    def _override(self, which: OverrideList) -> Action:
        async def act(request: Request, who: str) -> Response:
            entry = request.path_params["entry"]
            if request.method == "GET":
                if not is_override_entry(entry):
                    raise InvalidOverride()
                if entry not in (await self._admin.overrides())[which]:
                    status, message = ADMIN_CODES["override_not_found"]
                    return error_response(status, "override_not_found", message)
                return json_response({"list": which, "entry": entry, "present": True})
            present = request.method == "PUT"
            changed = await self._admin.set_override(which, entry, present, by=who)
            action = "override_add" if present else "override_remove"
            self._audit(who, action, list=which, entry=entry, changed=changed)
            body = {"list": which, "entry": entry, "present": present, "changed": changed}
            return json_response(body)

        return act

    # -- conversion ------------------------------------------------------------------------
    async def _stats(self, request: Request, who: str) -> Response:
        ranges = sorted(await self._admin.stats(), key=lambda r: r.scope)
        return json_response({"ranges": [_range(r) for r in ranges]})

    # -- second factors --------------------------------------------------------------------
    async def _identity_factors(self, request: Request, who: str) -> Response:
        found = await self._factors.factors(request.path_params["identity"])
        return json_response({"factors": [factor_body(f) for f in found]})

    async def _delete_factor(self, request: Request, who: str) -> Response:
        identity, factor_id = request.path_params["identity"], request.path_params["factor_id"]
        await self._factors.delete(identity, factor_id, by=who)
        self._audit(who, "delete_factor", identity=identity, factor_id=factor_id)
        return json_response({"deleted": factor_id})

    def _audit(self, who: str, action: str, **what: Any) -> None:
        fields = {"admin_key_name": who, "action": action, **what, "at": _iso(self._clock())}
        audit_log.info("admin action", extra=fields)


def _block(block: Block) -> dict[str, Any]:
    return {
        "kind": block.kind,
        "scope": block.scope,
        "reason": block.reason,
        "startedAt": _iso(block.started_at),
        "endsAt": _iso(block.ends_at),
        "counts": block.counts,
    }


def _verification(record: Verification | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "id": record.id,
        "status": record.status,
        "channel": record.channel,
        "purpose": record.purpose,
        "createdAt": _iso(record.created_at),
        "updatedAt": _iso(record.updated_at),
        "expiresAt": _iso(record.expires_at),
    }


def _range(stats: RangeStats) -> dict[str, Any]:
    return {
        "scope": stats.scope,
        "kind": stats.scope.partition(":")[0],
        "hour": _conversion(stats.hour_sends, stats.hour_approvals),
        "day": _conversion(stats.day_sends, stats.day_approvals),
    }


def _conversion(sends: int, approvals: int) -> dict[str, Any]:
    rate = round(approvals / sends, 4) if sends else None
    return {"sends": sends, "approvals": approvals, "conversion": rate}


def _log_safe(scope: str) -> str:
    """A block's scope for a log line: a phone or an email address (a lockout's scope)
    masked, a range as is."""
    return mask_key(scope) if scope.startswith("+") or is_email_key(scope) else scope


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    when = datetime.fromtimestamp(epoch, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
