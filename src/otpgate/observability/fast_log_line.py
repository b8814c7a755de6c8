"""The access line's fast path: a JSON line written straight to the sole handler's stream.

It reaches into ``logging``'s handler and logger internals (checked by
``unavailable()`` at start-up); its stock twin is ``logs.log_record``, an ordinary
record, which runs with ``FAST_PATH=false`` or when the check fails.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

from otpgate.observability.logs import JsonFormatter, json_entry, json_text, with_request_id


def log_fields(logger: logging.Logger, level: int, msg: str, fields: dict[str, Any]) -> None:
    """``logger.log(level, msg, extra=fields)``, for a line written on every request.

    When the service's own JSON set-up is the only place the line can go (no
    filter, no other handler on the way, as configured in production), the same
    line is written straight to that handler's stream under its lock. A log
    record, its lookups and the formatter's attribute scan were about two thirds
    of the access line's cost, itself ~15% of a verify's instructions. Any other
    set-up (a test capturing records, a handler added by an embedding app) gets
    the ordinary call. The caller has checked ``logger.isEnabledFor(level)``.
    """
    handler = _sole_handler(logger, level)
    if (
        not isinstance(handler, logging.StreamHandler)
        or type(handler.formatter) is not JsonFormatter
    ):
        logger.log(level, msg, extra=fields)
        return
    entry = json_entry(
        time.time(), logging.getLevelName(level), logger.name, msg, with_request_id(fields)
    )
    line = json_text(entry) + handler.terminator
    try:
        handler.acquire()
        try:
            handler.stream.write(line)
            handler.stream.flush()
        finally:
            handler.release()
    except Exception:
        logger.log(level, msg, extra=fields)  # let logging report the failure its own way


def unavailable() -> str | None:
    """Why ``log_fields`` cannot write lines itself with this logging, or None when it can.

    It walks the logger tree and writes under the handler's lock by itself; this
    checks, on a throwaway logger and handler (neither is registered anywhere),
    that the fields and methods it uses are there.
    """
    logger = logging.Logger("otpgate.check")
    for name in ("filters", "handlers", "propagate", "parent", "name"):
        if not hasattr(logger, name):
            return f"Logger has no {name}"
    handler = logging.StreamHandler(io.StringIO())
    for name in ("level", "filters", "formatter", "stream", "terminator"):
        if not hasattr(handler, name):
            return f"StreamHandler has no {name}"
    for name in ("acquire", "release"):
        if not callable(getattr(handler, name, None)):
            return f"StreamHandler has no {name}()"
    if logging.getLevelName(logging.INFO) != "INFO":
        return "getLevelName no longer names the levels"
    return None


def _sole_handler(logger: logging.Logger, level: int) -> logging.Handler | None:
    """The one handler a record from ``logger`` would reach, with no filter on the way."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        if current.handlers:
            if len(current.handlers) != 1:
                return None
            handler = current.handlers[0]
            return handler if level >= handler.level and not handler.filters else None
        if not current.propagate:
            return None
        current = current.parent
    return None
