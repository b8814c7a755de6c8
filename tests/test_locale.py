"""Language tags: which are well formed, and the order a tag is looked up in."""

from __future__ import annotations

import re

import pytest

from otpgate.domain.locale import LOCALE_PATTERN, MAX_LOCALE_LENGTH, is_locale, lookup_order
from otpgate.http.openapi import build_openapi
from otpgate.http.schemas import verify_body_model


@pytest.mark.parametrize(
    "tag",
    [
        "es",
        "pt-BR",
        "fr-CA",
        "EN-gb",
        "hi",
        "zh-Hant-TW",
        "sr-Latn-RS",
        "es-419",  # Latin American Spanish: a numeric region
        "zh-yue",  # an extended language subtag
        "de-CH-1996",  # a variant
        "en-US-u-ca-gregory",  # an extension
        "en-x-acme",  # private use
    ],
)
def test_well_formed_tags(tag: str) -> None:
    assert is_locale(tag)


@pytest.mark.parametrize(
    "tag",
    [
        "",
        "e",
        "pt_BR",  # POSIX, not BCP 47
        "pt-",
        "-pt",
        "pt--BR",
        "en-US-",
        "123",
        "en US",
        "es\n",  # ``$`` alone would let this through
        "en-a",  # an extension without its subtags
        "x-acme",  # private use alone names no language
        "ñu",
        "en-" + "-".join(["abcdefgh"] * 4),  # well formed, but longer than 35
    ],
)
def test_malformed_tags(tag: str) -> None:
    assert not is_locale(tag)


def test_the_pattern_is_the_check_the_document_states() -> None:
    """The OpenAPI document carries LOCALE_PATTERN and the length: together they are
    exactly ``is_locale``."""
    for tag in ["pt-BR", "zh-Hant-TW", "pt_BR", "es\n", "en-a", "a" * 36]:
        documented = len(tag) <= MAX_LOCALE_LENGTH and re.fullmatch(LOCALE_PATTERN, tag)
        assert bool(documented) == is_locale(tag), tag


@pytest.mark.parametrize(
    ("tag", "order"),
    [
        ("pt-BR", ("pt-br", "pt")),
        ("EN-gb", ("en-gb", "en")),
        ("zz", ("zz",)),
        ("zh-Hant-TW", ("zh-hant-tw", "zh-hant", "zh")),
        # RFC 4647 3.4: a prefix never ends in a single-letter subtag.
        (
            "zh-Hant-CN-x-private1-private2",
            (
                "zh-hant-cn-x-private1-private2",
                "zh-hant-cn-x-private1",
                "zh-hant-cn",
                "zh-hant",
                "zh",
            ),
        ),
    ],
)
def test_lookup_goes_from_the_tag_to_its_language(tag: str, order: tuple[str, ...]) -> None:
    assert lookup_order(tag) == order


def test_the_document_states_the_field_and_its_machine_code() -> None:
    document = build_openapi(verify_body_model(6))
    body = document["components"]["schemas"]["RequestOtpBody"]["properties"]["locale"]
    [tag, null] = body["anyOf"]
    assert tag == {"type": "string", "pattern": LOCALE_PATTERN, "maxLength": MAX_LOCALE_LENGTH}
    assert null == {"type": "null"}
    refused = document["paths"]["/api/v1/request-otp"]["post"]["responses"]["400"]
    assert "invalid_locale" in refused["description"]
