"""The effective settings as text, secrets redacted, for ``otpgate check-config``."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from otpgate.settings import Settings

REDACTED = "<set, redacted>"

# Not SecretStr, but still not for printing: it names the account the secret unlocks.
_SENSITIVE = frozenset({"aws_access_key_id"})


def redact_url(url: str) -> str:
    """``redis://user:pass@host`` -> ``redis://user:****@host``; anything else unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED  # unparseable: it may hold anything
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, sep, _ = userinfo.partition(":")
    masked = f"{user}:****" if sep else "****"
    return urlunsplit(parts._replace(netloc=f"{masked}@{host}"))


def shown(name: str, value: object) -> str:
    if isinstance(value, SecretStr) or (name in _SENSITIVE and value):
        return REDACTED
    if value is None:
        return "<unset>"
    text = str(value)
    return redact_url(text) if "://" in text else text


def describe(settings: Settings) -> str:
    lines = ["configuration OK", ""]
    for name in type(settings).model_fields:
        lines.append(f"  {name.upper():32} {shown(name, getattr(settings, name))}")
    workers = settings.workers or os.cpu_count() or 1
    if not settings.metrics_enabled:
        metrics = "off"
    elif settings.metrics_port is None:
        metrics = "/metrics on PORT"
    else:
        metrics = f"/metrics on {settings.metrics_host or settings.host}:{settings.metrics_port}"
    lines.append(f"  {'(effective SMS provider)':32} {settings.effective_sms_provider}")
    lines.append(f"  {'(store)':32} {'redis' if settings.redis_url else 'sqlite'}")
    lines.append(f"  {'(workers)':32} {workers}")
    lines.append(f"  {'(log format)':32} {'json' if settings.log_json else 'text'}")
    lines.append(f"  {'(metrics)':32} {metrics}")
    from otpgate.wiring import start_up_warnings

    lines += [f"  warning: {warning}" for warning in start_up_warnings(settings)]
    return "\n".join(lines)
