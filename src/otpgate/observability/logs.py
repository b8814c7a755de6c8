"""Logging set-up: JSON lines in production, readable text in development.

Fields passed with ``extra=`` become JSON keys. Callers pass masked phone
numbers only; nothing here ever receives a code, a hash or a secret. Client
libraries stay at WARNING even when LOG_LEVEL is debug: at DEBUG botocore logs
request bodies (the SMS text, so the code) and signed headers (the AWS key id).
"""

from __future__ import annotations

import logging
import sys
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
    return with_request_id({k: v for k, v in record.__dict__.items() if k not in _STANDARD})


def with_request_id(fields: dict[str, Any]) -> dict[str, Any]:
    if "request_id" not in fields:
        # Lines written while a request is handled carry its id, so they can be joined
        # to its access line.
        info = current_request.get()
        if info is not None:
            fields = {**fields, "request_id": info.request_id}
    return fields


def json_entry(
    created: float, level: str, logger: str, msg: str, extras: dict[str, Any]
) -> dict[str, Any]:
    """One JSON line's fields, the same whether a record or ``log_fields`` makes it."""
    return {"time": created, "level": level.lower(), "logger": logger, "msg": msg, **extras}


def json_text(entry: dict[str, Any]) -> str:
    return orjson.dumps(entry, default=str).decode()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = json_entry(
            record.created, record.levelname, record.name, record.getMessage(), _extras(record)
        )
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json_text(entry)


def log_record(logger: logging.Logger, level: int, msg: str, fields: dict[str, Any]) -> None:
    """``log_fields`` without its fast path: always an ordinary record."""
    logger.log(level, msg, extra=fields)


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
    # Not secrets, but a dozen lines of its plugins on every start-up check.
    "alembic",
)


def quiet_libraries(level: int) -> None:
    """Keep client libraries at WARNING or above, whatever the service's own level."""
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, level))
