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

from otpgate.request_context import current_request

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
    extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    if "request_id" not in extras:
        # Lines written while a request is handled carry its id, so they can be joined
        # to its access line.
        info = current_request.get()
        if info is not None:
            extras["request_id"] = info.request_id
    return extras


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # Libraries are noisy at DEBUG and some log request bodies; keep them at WARNING.
    for noisy in (
        "botocore",
        "aiobotocore",
        "urllib3",
        "asyncio",
        "aiohttp",
        "httpx",
        "httpcore",
        "hpack",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, _LEVELS[level]))
