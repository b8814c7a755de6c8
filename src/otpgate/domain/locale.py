"""Language tags as a client sends them (BCP 47, RFC 5646), and the order to look one up.

Only the shape is checked: ``es``, ``pt-BR``, ``zh-Hant-TW``, ``sr-Latn-RS`` are well
formed; whether a text exists in that language is the catalog's business, and a tag it
does not know falls back, never an error. The pattern is written for both Python and
JSON Schema (ECMA-262) regexes, so the OpenAPI document can carry it as it is.
"""

from __future__ import annotations

import re

_LANGUAGE = r"[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}|[A-Za-z]{4,8}"  # with extlangs (zh-yue)
_SCRIPT = r"-[A-Za-z]{4}"
_REGION = r"-(?:[A-Za-z]{2}|[0-9]{3})"
_VARIANT = r"-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3})"
_EXTENSION = r"-[0-9A-WY-Za-wy-z](?:-[A-Za-z0-9]{2,8})+"
_PRIVATE_USE = r"-[Xx](?:-[A-Za-z0-9]{1,8})+"
LOCALE_PATTERN = (
    rf"^(?:{_LANGUAGE})(?:{_SCRIPT})?(?:{_REGION})?(?:{_VARIANT})*(?:{_EXTENSION})*"
    rf"(?:{_PRIVATE_USE})?$"
)
# RFC 5646 section 4.4.1: 35 characters hold any tag short of long extensions.
MAX_LOCALE_LENGTH = 35
_LOCALE = re.compile(LOCALE_PATTERN)


def is_locale(value: str) -> bool:
    # fullmatch: ``$`` alone would let a trailing newline through.
    return len(value) <= MAX_LOCALE_LENGTH and _LOCALE.fullmatch(value) is not None


def lookup_order(tag: str) -> tuple[str, ...]:
    """RFC 4647 lookup: the tag in lowercase, then ever shorter prefixes of it.

    ``pt-BR`` gives ``("pt-br", "pt")``; a prefix never ends in a single-letter subtag
    (``en-a-bbb-x-a`` gives ``en-a-bbb``, then ``en``). Tags compare case-insensitively.
    """
    subtags = tag.lower().split("-")
    order: list[str] = []
    while subtags:
        order.append("-".join(subtags))
        subtags.pop()
        while subtags and len(subtags[-1]) == 1:
            subtags.pop()
    return tuple(order)
