"""The effective settings as text, secrets redacted, for ``otpgate check-config``."""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

from otpgate.config.settings import Settings
from otpgate.tokens.keys import KeySet

REDACTED = "<set, redacted>"

# Not SecretStr, but still not for printing: the account the secret unlocks, and the
# Verify v2 token's digest (as with API_KEYS, not even a digest is printed).
_SENSITIVE = frozenset({"aws_access_key_id", "verify_v2_auth_token"})


# Query parameters whose values are credentials (redis-py reads ?password=; webhook
# receivers often take ?token= or ?sig=).
_SECRET_PARAM = re.compile(r"pass|secret|token|key|sig|auth|cred", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``redis://user:pass@host`` -> ``redis://user:****@host``; credential-like query
    values masked too (``?token=****``); anything else unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED  # unparseable: it may hold anything
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        user, sep, _ = userinfo.partition(":")
        masked = f"{user}:****" if sep else "****"
        parts = parts._replace(netloc=f"{masked}@{host}")
    if parts.query:
        query = [
            (name, "****" if _SECRET_PARAM.search(name) else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return urlunsplit(parts)


def _origin_only(url: str) -> str:
    """Where a webhook goes, without a path or query that may carry its token."""
    parts = urlsplit(redact_url(url))
    if parts.path in ("", "/") and not parts.query and not parts.fragment:
        return urlunsplit(parts)
    return f"{parts.scheme}://{parts.netloc}/<redacted>"


def shown(name: str, value: object) -> str:
    if isinstance(value, SecretStr) or (name in _SENSITIVE and value):
        return REDACTED
    if name in ("api_keys", "admin_api_keys") and isinstance(value, dict):
        # Names only: not even a key's digest is printed.
        return ", ".join(value) if value else "<none>"
    if name == "widget_allowed_origins" and isinstance(value, list):
        return ", ".join(value) if value else "<none>"
    if value is None:
        return "<unset>"
    text = str(value)
    if name == "sms_webhook_url":
        return _origin_only(text)
    return redact_url(text) if "://" in text else text


def _store_summary(settings: Settings) -> str:
    if not settings.redis_url:
        return "sqlite"
    from otpgate.store.redis.slot import cluster_prefix, key_slot
    from otpgate.store.redis.store import record_span_seconds
    from otpgate.store.redis.url import ClusterUrl, parse_redis_url
    from otpgate.wiring import phone_state_seconds

    # Stores share phone records only with stores of the same span: compare before a
    # change of the code's lifetime, the cooldown or the send window rolls out.
    span = record_span_seconds(phone_state_seconds(settings))
    records = f"phone records span {span // 60} min"
    if not isinstance(parse_redis_url(settings.redis_url), ClusterUrl):
        return f"redis, {records}"
    prefix = cluster_prefix(settings.redis_key_prefix)  # checked by settings
    return f"redis cluster, every key under {prefix} (hash slot {key_slot(prefix)}), {records}"


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
    lines.append(f"  {'(channels)':32} {_channels_summary(settings)}")
    lines.append(f"  {'(api auth)':32} {_auth_summary(settings)}")
    lines.append(f"  {'(store)':32} {_store_summary(settings)}")
    lines.append(f"  {'(workers)':32} {workers}")
    lines.append(f"  {'(log format)':32} {'json' if settings.log_json else 'text'}")
    lines.append(f"  {'(metrics)':32} {metrics}")
    lines.append(f"  {'(admin)':32} {_admin_summary(settings)}")
    lines.append(f"  {'(shutdown timeout)':32} {settings.effective_shutdown_timeout:g}s")
    from otpgate.runtime import fast_path
    from otpgate.wiring import build_message, existing_token_keys, start_up_warnings

    lines += _token_lines(settings, existing_token_keys(settings))
    message = build_message(settings)
    layouts = message.sms_layouts(settings.otp_length, settings.otp_ttl_seconds)
    for language, layout in layouts.items():
        segments = f"{layout.segments} segment{'' if layout.segments == 1 else 's'}"
        lines.append(
            f"  {'(sms template) ' + language:32} {layout.encoding}, {layout.units} of"
            f" {layout.single_segment_limit} characters, {segments}"
            f" ({message.catalog.template('sms', language).origin})"
        )

    for part in fast_path.PARTS:
        if not settings.fast_path:
            state = f"off (FAST_PATH=false): {part.stock}"
        else:
            why = fast_path.reason(part)
            state = "on" if why is None else f"off ({why}): {part.stock}"
        lines.append(f"  {'(fast path) ' + part.name:32} {state}")

    lines += [f"  warning: {warning}" for warning in start_up_warnings(settings)]
    return "\n".join(lines)


def _channels_summary(settings: Settings) -> str:
    channels = ", ".join(settings.enabled_channels)
    chains = [">".join((first, *rest)) for first, rest in settings.channel_fallback.items()]
    return channels + (f"; fallback {', '.join(chains)}" if chains else "")


def _auth_summary(settings: Settings) -> str:
    mode = settings.effective_api_auth
    count = len(settings.api_keys)
    keys = f"{count} key{'' if count == 1 else 's'}"
    if count:
        keys += ": " + ", ".join(settings.api_keys)
    return f"{mode} ({keys})"


def _admin_summary(settings: Settings) -> str:
    if not settings.admin_api_keys:
        return "off (no ADMIN_API_KEYS)"
    where = "PORT"
    if settings.admin_port is not None:
        where = f"{settings.admin_host or settings.host}:{settings.admin_port} only"
    return f"/admin/v1/ and /admin on {where} ({', '.join(settings.admin_api_keys)})"


def _token_lines(settings: Settings, keys: KeySet | None) -> list[str]:
    """Which keys sign and are published: counts and public ids, never key material."""
    if keys is None:
        count = "none yet: a development key is created in TOKEN_DEV_KEY_FILE at start-up"
        kid = "<created at start-up>"
    elif settings.token_signing_keys_file is not None:
        count, kid = f"{len(keys.keys)} from TOKEN_SIGNING_KEYS_FILE", keys.signing.kid
    else:
        count, kid = "1, the development key in TOKEN_DEV_KEY_FILE", keys.signing.kid
    return [
        f"  {'(token keys published)':32} {count}",
        f"  {'(token signing kid)':32} {kid}",
    ]
