"""The HTTP layer: request bodies, client addresses, the widget and the operators' port."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, ClassVar
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import NoDecode

from otpgate.config.section import Section


class HttpSettings(Section):
    """How the API reads requests (how long one may take to arrive, and how many
    connections a worker holds) and who a client is (behind which proxies), which
    origins may embed the drop-in widget (/widget), and where the operators' routes
    (/admin/v1/ and /admin, on while ADMIN_API_KEYS is set) are served."""

    SECTION_TITLE: ClassVar[str] = "HTTP, widget and operators' routes"

    max_body_bytes: int = Field(
        4096,
        ge=256,
        le=1_048_576,
        description="The largest request body read, in bytes; a larger one is answered 413.",
    )
    http_header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds a request's headers may take to arrive: from the connection's"
        " opening for its first request, from its first byte for a later one. A client"
        " slower than that is answered 408 and its connection closed. An idle keep-alive"
        " connection between requests is closed after uvicorn's 5 second keep-alive timeout"
        " instead.",
    )
    http_body_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds a request's body may take to arrive once its headers have;"
        " past that the request is answered 408 (unless it was answered already) and its"
        " connection closed.",
    )
    http_max_connections_per_worker: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Open connections each worker holds at most. A connection past the cap"
        " is answered 503 (code too_many_connections, Retry-After: 1, Connection: close) as"
        " soon as its request's headers arrive, without running the request, and closed;"
        " a load balancer retries it on another instance. Keep it below the open-files"
        " limit (ulimit -n) divided by the workers.",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("TRUSTED_PROXIES", "TRUST_PROXY"),
        description="Comma-separated proxy CIDRs whose X-Forwarded-For is believed, walking"
        " from the right; empty trusts nobody, and the client is the peer address. Behind"
        " a load balancer, production lists its addresses.",
    )
    ipv6_prefix_length: int = Field(
        64,
        ge=32,
        le=128,
        description="IPv6 clients share the per-IP limits by this prefix length (32 to 128;"
        " a host often owns a /64); IPv4 clients count by address.",
    )
    widget_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins (scheme://host[:port]) that may frame /widget and"
        " receive its token, by postMessage or a return_url; empty lets none. https (or a"
        " loopback address) in production.",
    )
    admin_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve /admin/v1/ and /admin on this TCP port only (a second socket of"
        " each worker) instead of PORT; needs ADMIN_API_KEYS, and must differ from PORT and"
        " METRICS_PORT.",
    )
    admin_host: str | None = Field(None, description="Listen address for ADMIN_PORT; unset: HOST.")

    @field_validator("trusted_proxies", "widget_allowed_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP address or CIDR") from None
        return value

    @field_validator("widget_allowed_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        origins: list[str] = []
        for origin in map(web_origin, value):
            if origin not in origins:
                origins.append(origin)
        return origins


_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"[a-z0-9._-]+")  # urlsplit's hostname is lowercase already


def web_origin(text: str) -> str:
    """``text`` as a browser writes an origin (``URL.origin``): lowercase scheme and host,
    no default port, no trailing slash; ValueError unless it is exactly one http(s) origin."""
    shape = "must be an origin, scheme://host[:port] with http or https"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} {shape}") from None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        raise ValueError(f"{text!r} {shape}")
    if not host.isascii():
        raise ValueError(f"{text!r} {shape}, an international name in its xn-- form")
    if not (_HOST.fullmatch(host) or ":" in host):
        raise ValueError(f"{text!r} {shape}; the host has characters no host name has")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{text!r} {shape}, without user or password")
    if parts.path or parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f"{text!r} {shape}, without a path, not even a trailing /")
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"{scheme}://{host}" + ("" if port in (None, _DEFAULT_PORTS[scheme]) else f":{port}")
