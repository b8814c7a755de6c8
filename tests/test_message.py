"""The SMS text: template fields, WebOTP and Android lines, segment counting."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from otpgate.domain.message import (
    DEFAULT_TEMPLATE,
    MessageTemplate,
    check_template,
    measure,
    minutes_for,
)
from otpgate.wiring import build_components
from tests.conftest import make_settings
from tests.fakes import CapturingSender

# WebOTP: the last line is "@<host> #<code>" (https://wicg.github.io/sms-one-time-codes/).
WEBOTP_LAST_LINE = re.compile(r"\n@([a-z0-9.-]+) #([0-9]+)\Z")


def test_default_reads_like_a_product_and_carries_the_code() -> None:
    text = MessageTemplate(app="Acme").render("042917", ttl_seconds=300)
    assert text == (
        "042917 is your Acme verification code. It expires in 5 minutes. Don't share it."
    )
    layout = measure(text)
    assert (layout.encoding, layout.segments) == ("GSM-7", 1)


def test_minutes_round_down_so_the_text_never_overpromises() -> None:
    assert [minutes_for(s) for s in (30, 60, 119, 300, 86_400)] == [1, 1, 1, 5, 1440]


def test_webotp_line_is_last_and_binds_the_code_to_the_origin() -> None:
    text = MessageTemplate(webotp_domain="login.example.com").render("123456", 300)
    match = WEBOTP_LAST_LINE.search(text)
    assert match is not None
    assert match.groups() == ("login.example.com", "123456")
    assert "\n\n@login.example.com" in text  # separated from the human text


def test_android_hash_goes_before_the_webotp_line() -> None:
    m = MessageTemplate(webotp_domain="example.com", android_app_hash="FA+9qCX9VSu")
    lines = m.render("123456", 300).split("\n")
    assert lines[1] == "FA+9qCX9VSu"
    assert lines[-1] == "@example.com #123456"
    only_hash = MessageTemplate(android_app_hash="FA+9qCX9VSu").render("123456", 300)
    assert only_hash.endswith("\nFA+9qCX9VSu")


def test_default_with_both_lines_fits_one_gsm7_segment() -> None:
    m = MessageTemplate(
        app="Acme Payments", webotp_domain="login.acme-payments.com", android_app_hash="A" * 11
    )
    assert m.fit_warnings(code_length=10, ttl_seconds=86_400) == []
    assert measure(m.render("0123456789", 86_400)).units <= 160


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters take two septets
        ("{" * 81, "GSM-7", 162, 2),
        ("é" * 160, "GSM-7", 160, 1),  # é is in the GSM-7 basic table
        ("ê" * 70, "UCS-2", 70, 1),  # ê is not
        ("ê" * 71, "UCS-2", 71, 2),
        ("a" * 134 + "😀", "UCS-2", 136, 3),  # an emoji is two UTF-16 units
    ],
)
def test_segments(text: str, encoding: str, units: int, segments: int) -> None:
    layout = measure(text)
    assert (layout.encoding, layout.units, layout.segments) == (encoding, units, segments)


def test_curly_apostrophe_forces_ucs2_and_is_named() -> None:
    curly = "\u2019"  # what word processors put in "Don't"
    layout = measure(f"Don{curly}t share it. " + "x" * 60)
    assert layout.encoding == "UCS-2"
    assert layout.non_gsm == curly
    template = f"{{code}}: don{curly}t share it. " + "x" * 60
    [warning] = MessageTemplate(template=template).fit_warnings(6, 300)
    assert "UCS-2" in warning
    assert "2 SMS segments" in warning


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("Your code", "must contain {code}"),
        ("Code {code} for {user}", "unknown placeholder {user}"),
        ("Code {code.real}", "unknown placeholder"),
        ("Code {code!r}", "unknown placeholder"),
        ("Code {code:>8}", "unknown placeholder"),
        ("Code {code", "brace"),
        ("Code {0}", "unknown placeholder"),
    ],
)
def test_bad_templates_are_refused(template: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        check_template(template)


def test_literal_braces_and_all_fields() -> None:
    template = "{{{app}}} code {code}, {minutes} min"
    assert check_template(template) == template
    assert MessageTemplate(template, app="X").render("123456", 600) == "{X} code 123456, 10 min"
    assert check_template(DEFAULT_TEMPLATE) == DEFAULT_TEMPLATE


async def test_start_up_warns_when_the_template_cannot_fit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    long_template = "{code} is your {app} code. " + "Please keep it to yourself. " * 6
    settings = make_settings(tmp_path, sms_message_template=long_template)
    with caplog.at_level(logging.WARNING, logger="otpgate"):
        components = build_components(settings, sender=CapturingSender())
    await components.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("SMS_MESSAGE_TEMPLATE" in w and "2 SMS segments" in w for w in warnings)


async def test_start_up_is_quiet_for_the_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path)  # every shipped language's SMS fits one segment
    with caplog.at_level(logging.WARNING, logger="otpgate"):
        components = build_components(settings, sender=CapturingSender())
    await components.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_webotp_line_leaves_only_the_ucs2_languages_over_one_segment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The English default still fits with the WebOTP line; a UCS-2 text (70 characters
    a segment) cannot, and start-up says which, in what encoding, in how many segments."""
    settings = make_settings(tmp_path, sms_webotp_domain="example.com")
    with caplog.at_level(logging.WARNING, logger="otpgate"):
        components = build_components(settings, sender=CapturingSender())
    await components.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [w.split(" SMS template")[0] for w in warnings] == ["The 'hi'", "The 'pt'"]
    for warning in warnings:
        assert "UCS-2 characters and will be sent as 2 SMS segments" in warning
        assert "shipped templates/sms/" in warning


async def test_the_configured_text_reaches_the_sender(make_service) -> None:
    sender = CapturingSender()
    service = await make_service(
        sender,
        sms_app_name="Acme",
        sms_webotp_domain="login.acme.example",
        otp_ttl_seconds=600,
    )
    response = await service.request("+12125550123")
    assert response.status_code == 200
    [(phone, text)] = sender.sent
    code = sender.last_code(phone)
    assert text.startswith(f"{code} is your Acme verification code. It expires in 10 minutes.")
    assert text.endswith(f"\n\n@login.acme.example #{code}")
    assert (await service.verify(phone, code)).status_code == 200
