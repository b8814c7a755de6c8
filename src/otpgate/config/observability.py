"""Logs and metrics: what operators see of the running service."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from otpgate.config.section import Section

LogLevel = Literal[
    "trace", "debug", "info", "warning", "warn", "error", "fatal", "critical", "silent"
]


class ObservabilitySettings(Section):
    """Log lines and Prometheus metrics. Codes, hashes, secrets and keys never appear in
    either, whatever the level."""

    SECTION_TITLE: ClassVar[str] = "Logs and metrics"

    log_level: LogLevel = Field(
        "info",
        description="The least severe log lines written: trace, debug, info, warning (or"
        " warn), error, fatal (or critical), or silent for none.",
    )
    log_format: Literal["auto", "json", "text"] = Field(
        "auto",
        description="json writes one JSON object a line; text, readable lines; auto is json"
        " when APP_ENV=production and text otherwise.",
    )
    access_log: bool = Field(
        True,
        description="One access line per request (request id, route, status, latency,"
        " client IP), at info level.",
    )
    metrics_enabled: bool = Field(
        True,
        description="Count requests and outcomes for Prometheus and serve /metrics; false"
        " turns both the counting and the endpoint off.",
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve /metrics on this TCP port (from the `otpgate serve` process)"
        " instead of PORT; unset: on PORT. Must differ from PORT and ADMIN_PORT.",
    )
    metrics_host: str | None = Field(
        None, description="Listen address for METRICS_PORT; unset: HOST."
    )
