"""The per-request line: written directly only when that changes nothing."""

from __future__ import annotations

import io
import logging
from typing import Any

import orjson
import pytest

from otpgate.observability.fast_log_line import log_fields
from otpgate.observability.logs import JsonFormatter, TextFormatter

FIELDS = {
    "request_id": "r-1",
    "route": "/api/v1/verify-otp",
    "status": 400,
    "phone": "+1212***0123",
}


@pytest.fixture
def logger() -> tuple[logging.Logger, logging.Logger]:
    """A parent standing in for the root and a child that propagates to it, both outside
    the global logger tree, so no capture handler of the test runner joins them."""
    parent = logging.Logger("logfieldtest", logging.DEBUG)
    parent.propagate = False
    child = logging.Logger("logfieldtest.access")
    child.parent = parent
    return parent, child


def stream_handler(formatter: logging.Formatter) -> tuple[logging.StreamHandler[Any], io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    return handler, out


def test_direct_line_is_the_formatters_line(
    logger: tuple[logging.Logger, logging.Logger], monkeypatch: pytest.MonkeyPatch
) -> None:
    parent, child = logger
    handler, out = stream_handler(JsonFormatter())
    parent.addHandler(handler)
    with monkeypatch.context() as patch:
        # Direct means no log record at all.
        patch.setattr(child, "makeRecord", lambda *a, **k: pytest.fail("made a record"))
        log_fields(child, logging.INFO, "request", FIELDS)
    child.log(logging.INFO, "request", extra=FIELDS)
    direct, ordinary = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert list(direct) == list(ordinary)
    direct.pop("time"), ordinary.pop("time")
    assert (
        direct
        == ordinary
        == {
            "level": "info",
            "logger": "logfieldtest.access",
            "msg": "request",
            **FIELDS,
        }
    )


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_any_other_set_up_gets_ordinary_records(
    logger: tuple[logging.Logger, logging.Logger],
) -> None:
    parent, child = logger
    handler, out = stream_handler(JsonFormatter())
    recorder = Recorder()
    # A second handler (as a test's capture would add): both get the line as a record.
    parent.addHandler(handler)
    parent.addHandler(recorder)
    log_fields(child, logging.INFO, "request", FIELDS)
    assert len(recorder.records) == 1 and recorder.records[0].status == 400
    assert orjson.loads(out.getvalue())["status"] == 400

    # A filter on the way is honoured.
    parent.removeHandler(recorder)
    child.addFilter(lambda record: False)
    log_fields(child, logging.INFO, "request", FIELDS)
    assert len(out.getvalue().splitlines()) == 1


def test_text_format_is_left_to_logging(logger: tuple[logging.Logger, logging.Logger]) -> None:
    parent, child = logger
    handler, out = stream_handler(TextFormatter())
    parent.addHandler(handler)
    log_fields(child, logging.INFO, "request", FIELDS)
    assert "request request_id=r-1" in out.getvalue()


def test_handler_level_is_honoured(logger: tuple[logging.Logger, logging.Logger]) -> None:
    parent, child = logger
    handler, out = stream_handler(JsonFormatter())
    handler.setLevel(logging.WARNING)
    parent.addHandler(handler)
    log_fields(child, logging.INFO, "request", FIELDS)
    assert out.getvalue() == ""
    log_fields(child, logging.WARNING, "request", FIELDS)
    assert orjson.loads(out.getvalue())["level"] == "warning"
