"""Start-up checks: each fast path runs only while its library still has what it uses."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import aiohttp
import prometheus_client
import pytest
from uvicorn.protocols.http import httptools_impl

from otpgate import fast_path
from otpgate.fast_path import PARTS, Part
from otpgate.http import fast_routes, server_protocol
from otpgate.logs import unavailable as logs_unavailable
from otpgate.metric_tally import unavailable as tallies_unavailable
from otpgate.sms import sns_publish


@pytest.fixture(autouse=True)
def fresh_decisions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test decides anew, as a new process would."""
    monkeypatch.setattr(fast_path, "_reasons", {})


@pytest.mark.parametrize("part", PARTS, ids=[part.name for part in PARTS])
def test_every_fast_path_fits_the_installed_libraries(part: Part) -> None:
    assert importlib.import_module(part.module).unavailable() is None
    assert fast_path.enabled(part, True)


def test_off_when_not_wanted_without_checking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_protocol, "unavailable", lambda: pytest.fail("checked"))
    assert not fast_path.enabled(fast_path.SERVER_PROTOCOL, False)


def test_a_failed_check_warns_once_and_stays_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[None] = []

    def gone() -> str:
        calls.append(None)
        return "STATUS_LINE is gone"

    monkeypatch.setattr(server_protocol, "unavailable", gone)
    with caplog.at_level(logging.WARNING, logger="otpgate.fast_path"):
        for _ in range(3):
            assert not fast_path.enabled(fast_path.SERVER_PROTOCOL, True)
    assert len(calls) == 1
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "otpgate.http.server_protocol" in record.getMessage()
    assert "STATUS_LINE is gone" in record.getMessage()
    assert "uvicorn's own HTTP protocol" in record.getMessage()


def test_a_module_that_no_longer_imports_is_a_reason(caplog: pytest.LogCaptureFixture) -> None:
    gone = Part("gone", "otpgate.no_such_module", "the stock path")
    with caplog.at_level(logging.WARNING, logger="otpgate.fast_path"):
        assert not fast_path.enabled(gone, True)
    assert "ModuleNotFoundError" in caplog.text
    assert "otpgate.no_such_module" in caplog.text


def test_a_check_that_raises_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise ValueError("no signature found")

    monkeypatch.setattr(fast_routes, "unavailable", broken)
    assert not fast_path.enabled(fast_path.ROUTES, True)


# -- the checks notice what they are there to notice ------------------------------------------


def test_server_protocol_check(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(httptools_impl, "STATUS_LINE", {})
        assert "STATUS_LINE" in (server_protocol.unavailable() or "")

    def cycle_without_keep_alive(self: Any, scope: Any, transport: Any) -> None:
        self.scope = scope
        self.transport = transport

    with monkeypatch.context() as patch:
        patch.setattr(httptools_impl.RequestResponseCycle, "__init__", cycle_without_keep_alive)
        reason = server_protocol.unavailable() or ""
        assert reason.startswith("RequestResponseCycle no longer sets")
        assert "keep_alive" in reason and "response_started" in reason


def test_routes_check(monkeypatch: pytest.MonkeyPatch) -> None:
    class Detached(fast_routes.Response):
        """Headers kept somewhere other than raw_headers."""

        @property
        def headers(self) -> Any:
            return {}

    monkeypatch.setattr(fast_routes, "Response", Detached)
    assert fast_routes.unavailable() == "headers set on a Response do not reach its raw_headers"


def test_access_line_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(logging.StreamHandler, "terminator")
    assert logs_unavailable() == "StreamHandler has no terminator"


def test_metric_tallies_check(monkeypatch: pytest.MonkeyPatch) -> None:
    def observe(self: Any, amount: float) -> None:
        self._value.inc(amount)

    monkeypatch.setattr(prometheus_client.Histogram, "observe", observe)
    reason = tallies_unavailable() or ""
    assert reason.startswith("Histogram.observe no longer uses")
    assert "_buckets" in reason and "_sum" in reason


def test_metric_tallies_check_adds_up_a_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    # Buckets that became cumulative would pass every name check; the round trip fails.
    real = prometheus_client.Histogram._child_samples

    def cumulative_twice(self: Any) -> Any:
        return [s._replace(value=s.value * 2) for s in real(self)]

    monkeypatch.setattr(prometheus_client.Histogram, "_child_samples", cumulative_twice)
    assert tallies_unavailable() == "a flushed tally does not add up to the values observed"


def test_sns_publish_check(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.delattr(aiohttp, "ConnectionTimeoutError")
        assert sns_publish.unavailable() == "aiohttp.ConnectionTimeoutError is gone"
    with monkeypatch.context() as patch:
        patch.setattr(sns_publish, "get_environ_proxies", lambda endpoint: {})
        assert sns_publish.unavailable() == "botocore's get_environ_proxies no longer takes (url)"
