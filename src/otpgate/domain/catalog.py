"""Message templates by channel and language: checked once, filled per message.

A template is a ``str.format`` text with ``{code}``, ``{app}``, ``{minutes}`` and
``{purpose}`` (the last shown only when the operator allows it, see ``message.py``).
Every channel has a text; an email has a subject and an HTML body as well. Where the
texts come from (the package, TEMPLATES_DIR, SMS_MESSAGE_TEMPLATE) is the caller's
business: this module reads no file, it only checks and fills what it is given.

Each channel fills the values its way: a call spells the code digit by digit, so a
text-to-speech voice says "1, 2, 3" instead of "one hundred and twenty-three"; an
HTML body escapes them, since the app name is free text.

A language is looked up by RFC 4647 (``pt-BR``, then ``pt``), then English: every
channel has an English template, so every lookup ends somewhere.
"""

from __future__ import annotations

import html
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from otpgate.domain.locale import is_locale, lookup_order

Channel = Literal["sms", "whatsapp", "call", "email"]
Part = Literal["text", "subject", "html"]
CHANNELS: tuple[Channel, ...] = ("sms", "whatsapp", "call", "email")
PARTS: Mapping[Channel, tuple[Part, ...]] = {
    "sms": ("text",),
    "whatsapp": ("text",),
    "call": ("text",),
    "email": ("subject", "text", "html"),
}
_BY_NAME: Mapping[str, Channel] = {channel: channel for channel in CHANNELS}
FALLBACK_LANGUAGE = "en"
TEMPLATE_FIELDS = frozenset({"code", "app", "minutes", "purpose"})

# (channel, language in lowercase, part)
TemplateKey = tuple[Channel, str, Part]


def as_channel(name: str) -> Channel | None:
    """``name`` as a channel, None when it names none."""
    return _BY_NAME.get(name)


def check_placeholders(template: str, *, require_code: bool = True) -> str:
    """Refuse a template that cannot render: unknown fields, bad braces, no ``{code}``."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{exc}; write a literal brace as {{{{ or }}}}") from None
    seen = set()
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(
                f"unknown placeholder {{{name}}}; use only {{code}}, {{app}}, {{minutes}}"
                " and {purpose}"
            )
        seen.add(name)
    if require_code and "code" not in seen:
        raise ValueError("must contain {code}")
    return template


def check_part(part: Part, template: str) -> str:
    """A template fit for its part: a subject is one line and may leave the code out."""
    if not template.strip():
        raise ValueError("is empty")
    if part == "subject" and ("\n" in template or "\r" in template):
        raise ValueError("a subject must be one line")
    return check_placeholders(template, require_code=part != "subject")


def uses_purpose(template: str) -> bool:
    return any(name == "purpose" for _, name, _, _ in string.Formatter().parse(template))


def spell_digits(code: str) -> str:
    """``123`` as ``1, 2, 3``: a voice reads each digit, with a pause between."""
    return ", ".join(code)


@dataclass(frozen=True, slots=True)
class Template:
    text: str
    origin: str  # where it came from, for messages: a file, a variable


@dataclass(frozen=True, slots=True)
class Rendered:
    """One message, filled in. ``language`` is the catalog's (``pt`` for ``pt-BR``)."""

    language: str
    text: str
    subject: str | None = None  # email only
    html: str | None = None  # email only


@dataclass(frozen=True, slots=True)
class TemplateCatalog:
    """Templates by (channel, language, part); each checked when the catalog is built.

    Refused with ValueError naming the template's origin: a template that cannot
    render, an email without all three parts, a channel without English.
    """

    templates: Mapping[TemplateKey, Template] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        templates = dict(self.templates)
        for (channel, language, part), template in templates.items():
            try:
                if channel not in PARTS or part not in PARTS[channel]:
                    raise ValueError(f"no {part} template for the {channel} channel")
                if language != language.lower() or not is_locale(language):
                    raise ValueError(f"{language!r} is not a lowercase BCP 47 language tag")
                check_part(part, template.text)
            except ValueError as exc:
                raise ValueError(f"{template.origin}: {exc}") from None
        for channel, language in sorted({(c, lang) for c, lang, _ in templates}):
            missing = [p for p in PARTS[channel] if (channel, language, p) not in templates]
            if missing:
                origin = next(
                    t.origin for k, t in sorted(templates.items()) if k[:2] == (channel, language)
                )
                raise ValueError(
                    f"{origin}: the {channel} template in {language!r} lacks its "
                    f"{' and '.join(missing)} (each language needs {', '.join(PARTS[channel])})"
                )
        for channel in sorted({c for c, _, _ in templates}):
            if (channel, FALLBACK_LANGUAGE, "text") not in templates:
                raise ValueError(
                    f"the {channel} templates have no English one, which every other "
                    "language falls back to"
                )
        object.__setattr__(self, "templates", templates)

    def with_template(self, key: TemplateKey, template: Template) -> TemplateCatalog:
        return TemplateCatalog({**self.templates, key: template})

    def items(self) -> list[tuple[TemplateKey, Template]]:
        return sorted(self.templates.items())

    def languages(self, channel: Channel) -> list[str]:
        return sorted({lang for c, lang, _ in self.templates if c == channel})

    def language_for(self, channel: Channel, locale: str | None) -> str:
        """The language the channel has for ``locale``: the tag, its prefixes, English."""
        for language in (*(lookup_order(locale) if locale else ()), FALLBACK_LANGUAGE):
            if (channel, language, "text") in self.templates:
                return language
        raise LookupError(f"no {channel} template, not even an English one")

    def template(self, channel: Channel, language: str, part: Part = "text") -> Template:
        return self.templates[(channel, language, part)]

    def render(
        self,
        channel: Channel,
        locale: str | None,
        *,
        code: str,
        app: str,
        minutes: int,
        purpose: str = "",
    ) -> Rendered:
        """The channel's message in the language found for ``locale``."""
        language = self.language_for(channel, locale)
        said = spell_digits(code) if channel == "call" else code
        values = {"code": said, "app": app, "minutes": minutes, "purpose": purpose}

        def fill(part: Part) -> str:
            text = self.templates[(channel, language, part)].text
            if part == "html":
                escaped = {k: html.escape(str(v)) for k, v in values.items()}
                return text.format(**escaped)
            return text.format(**values)

        if channel != "email":
            return Rendered(language, fill("text"))
        return Rendered(language, fill("text"), subject=fill("subject"), html=fill("html"))
