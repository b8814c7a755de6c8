"""Logging set-up: JSON lines in production, readable text in development.

Fields passed with ``extra=`` become JSON keys. Callers pass masked phone
numbers only; nothing here ever receives a code, a hash or a secret. Client
libraries stay at WARNING even when LOG_LEVEL is debug: at DEBUG botocore logs
request bodies (the SMS text, so the code) and signed headers (the AWS key id).
"""

from __future__ import annotations

import io
import logging
import sys
import time
from typing import Any

import orjson

from otpgate.observability.request_context import current_request

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "critical": logging.CRITICAL,
    "silent": logging.CRITICAL + 10,
}

# uvicorn adds "color_message" (the message again, with terminal colour codes) to its own.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return _with_request_id({k: v for k, v in record.__dict__.items() if k not in _STANDARD})


def _with_request_id(fields: dict[str, Any]) -> dict[str, Any]:
    if "request_id" not in fields:
        # Lines written while a request is handled carry its id, so they can be joined
        # to its access line.
        info = current_request.get()
        if info is not None:
            fields = {**fields, "request_id": info.request_id}
    return fields


def _json_entry(
    created: float, level: str, logger: str, msg: str, extras: dict[str, Any]
) -> dict[str, Any]:
    """One JSON line's fields, the same whether a record or ``log_fields`` makes it."""
    return {"time": created, "level": level.lower(), "logger": logger, "msg": msg, **extras}


def _json_text(entry: dict[str, Any]) -> str:
    return orjson.dumps(entry, default=str).decode()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = _json_entry(
            record.created, record.levelname, record.name, record.getMessage(), _extras(record)
        )
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _json_text(entry)


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
    entry = _json_entry(
        time.time(), logging.getLevelName(level), logger.name, msg, _with_request_id(fields)
    )
    line = _json_text(entry) + handler.terminator
    try:
        handler.acquire()
        try:
            handler.stream.write(line)
            handler.stream.flush()
        finally:
            handler.release()
    except Exception:
        logger.log(level, msg, extra=fields)  # let logging report the failure its own way


def log_record(logger: logging.Logger, level: int, msg: str, fields: dict[str, Any]) -> None:
    """``log_fields`` without its fast path: always an ordinary record."""
    logger.log(level, msg, extra=fields)


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


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def configure_logging(level: str, json_lines: bool) -> None:
    # Neither format shows the calling function or line, so skip the stack walk that
    # finds them on every record (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    # Nor thread, process or multiprocessing names, which every record would
    # otherwise look up (same section; under 1% of a verify's instructions).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    quiet_libraries(_LEVELS[level])


# Client libraries that log request bodies (botocore: the SMS text, so the code) or
# signed headers (the AWS key id) at DEBUG.
NOISY_LIBRARIES = (
    "botocore",
    "aiobotocore",
    "urllib3",
    "asyncio",
    "aiohttp",
    "httpx",
    "httpcore",
    "hpack",
)


def quiet_libraries(level: int) -> None:
    """Keep client libraries at WARNING or above, whatever the service's own level."""
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, level))
