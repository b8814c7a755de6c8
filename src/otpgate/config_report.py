"""The effective settings as text, secrets redacted, for ``otpgate check-config``."""

from __future__ import annotations

from pydantic import SecretStr

from otpgate.settings import Settings


def describe(settings: Settings) -> str:
    lines = ["configuration OK", ""]
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            shown = "<set, redacted>"
        elif value is None:
            shown = "<unset>"
        else:
            shown = str(value)
        lines.append(f"  {name.upper():32} {shown}")
    lines.append(f"  {'(effective SMS provider)':32} {settings.effective_sms_provider}")
    lines.append(f"  {'(store)':32} {'redis' if settings.redis_url else 'sqlite'}")
    return "\n".join(lines)
