"""Reading and validating a JSON body with hard limits on size and type."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from otpgate.http.errors import HttpError

M = TypeVar("M", bound=BaseModel)


async def read_json_body(request: Request, model: type[M], max_bytes: int) -> M:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise HttpError("unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise HttpError("payload_too_large")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HttpError("payload_too_large")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _describe(exc) from None


def _describe(exc: ValidationError) -> HttpError:
    first = exc.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid" or (first["type"] == "model_type" and not first["loc"]):
        return HttpError("invalid_json", "Body must be a JSON object.")
    field = "/".join(str(p) for p in first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        message = f"body/{field} is not an allowed property."
    elif kind == "missing":
        message = f"body must have required property '{field}'."
    elif kind == "string_pattern_mismatch":
        message = f"body/{field} has an invalid format."
    elif kind in {"string_type", "string_too_long"}:
        message = f"body/{field} must be a string of the right length."
    else:
        message = f"body/{field}: {first['msg']}."
    return HttpError("invalid_body", message)
