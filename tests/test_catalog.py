"""The template catalog's rules, on templates built in memory (no files)."""

from __future__ import annotations

import re

import pytest

from otpgate.domain.catalog import Template, TemplateCatalog, TemplateKey, spell_digits
from otpgate.domain.message import DEFAULT_TEMPLATE, MessageTemplate


def catalog(**texts: str) -> TemplateCatalog:
    """``sms_en="..."``, ``email_es_subject="..."``: the key's parts joined by ``_``."""
    templates: dict[TemplateKey, Template] = {}
    for name, text in texts.items():
        channel, language, *part = name.split("_")
        key = (channel, language, part[0] if part else "text")
        templates[key] = Template(text, f"test {name}")  # type: ignore[index]
    return TemplateCatalog(templates)


EMAIL_EN = {
    "email_en_subject": "Your {app} code",
    "email_en_text": "Code: {code}",
    "email_en_html": "<p>{app}: <b>{code}</b></p>",
}


def test_a_channel_is_found_by_tag_then_language_then_english() -> None:
    c = catalog(sms_en="en {code}", sms_pt="pt {code}", sms_es="es {code}")
    assert c.language_for("sms", "pt-BR") == "pt"
    assert c.language_for("sms", "ES") == "es"
    assert c.language_for("sms", "zz") == "en"
    assert c.language_for("sms", "EN-gb") == "en"
    assert c.language_for("sms", None) == "en"


def test_an_exact_tag_wins_over_its_language() -> None:
    c = catalog(sms_en="en {code}", sms_pt="pt {code}", **{"sms_pt-br": "br {code}"})
    assert c.render("sms", "pt-BR", code="1", app="A", minutes=5).text == "br 1"
    assert c.render("sms", "pt-PT", code="1", app="A", minutes=5).text == "pt 1"


def test_a_call_spells_the_code_digit_by_digit() -> None:
    assert spell_digits("042917") == "0, 4, 2, 9, 1, 7"
    c = catalog(call_en="Your {app} code is {code}. Again: {code}.")
    rendered = c.render("call", None, code="123", app="Acme", minutes=5)
    assert rendered.text == "Your Acme code is 1, 2, 3. Again: 1, 2, 3."


def test_an_email_has_three_parts_and_its_html_escapes_the_values() -> None:
    c = catalog(**EMAIL_EN)
    rendered = c.render("email", "fr", code="123456", app="A&B <Pay>", minutes=5)
    assert rendered.language == "en"
    assert rendered.subject == "Your A&B <Pay> code"
    assert rendered.text == "Code: 123456"
    assert rendered.html == "<p>A&amp;B &lt;Pay&gt;: <b>123456</b></p>"


@pytest.mark.parametrize(
    ("texts", "reason"),
    [
        ({"sms_en": "Hello"}, "test sms_en: must contain {code}"),
        ({"sms_en": "{code} for {user}"}, "test sms_en: unknown placeholder {user}"),
        ({"sms_en": "{code"}, "test sms_en: "),
        ({"sms_en": "  "}, "test sms_en: is empty"),
        ({**EMAIL_EN, "email_en_subject": "Your\ncode"}, "a subject must be one line"),
        ({**EMAIL_EN, "email_en_html": "<p>no code</p>"}, "email_en_html: must contain {code}"),
        # An email needs all three parts in each language.
        ({**EMAIL_EN, "email_es_text": "{code}"}, "the email template in 'es' lacks its"),
        # English is where every lookup ends.
        ({"sms_en": "{code}", "whatsapp_es": "{code}"}, "the whatsapp templates have no English"),
        ({"sms_en": "{code}", "sms_en_html": "{code}"}, "no html template for the sms channel"),
        ({"sms_en": "{code}", "sms_EN": "{code}"}, "not a lowercase BCP 47 language tag"),
    ],
)
def test_templates_that_cannot_be_used_are_refused(texts: dict[str, str], reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        catalog(**texts)


def test_the_subject_may_leave_the_code_out() -> None:
    c = catalog(**EMAIL_EN)
    assert "{code}" not in c.template("email", "en", "subject").text


def test_the_english_sms_template_replaces_the_catalogs() -> None:
    """SMS_MESSAGE_TEMPLATE, when set, is THE English SMS; unset, the catalog's is."""
    c = catalog(sms_en="catalog {code}", sms_es="es {code}")
    assert MessageTemplate(catalog=c).render("123456", 300) == "catalog 123456"
    configured = MessageTemplate(template="configured {code}", catalog=c)
    assert configured.render("123456", 300) == "configured 123456"
    assert configured.render("123456", 300, locale="es-MX") == "es 123456"
    assert configured.catalog.template("sms", "en").origin == "SMS_MESSAGE_TEMPLATE"
    assert MessageTemplate().render("1", 300) == DEFAULT_TEMPLATE.format(
        code="1", app="otpgate", minutes=5
    )


def test_the_extra_sms_lines_and_the_purpose_apply_in_every_language() -> None:
    c = catalog(sms_en="{code} {purpose}", sms_es="es {code} {purpose}")
    m = MessageTemplate(catalog=c, webotp_domain="example.com", show_purpose=True)
    assert m.render("123456", 300, "login", "es") == "es 123456 login\n\n@example.com #123456"
    hidden = MessageTemplate(catalog=c)
    assert hidden.render("123456", 300, "login", "es") == "es 123456 "


def test_every_language_is_measured_for_the_one_segment_warning() -> None:
    c = catalog(sms_en="{code}", sms_hi="{code} " + "क" * 70, sms_de="{code} " + "x" * 160)
    warnings = MessageTemplate(catalog=c).fit_warnings(6, 300)
    assert [w.split(" renders")[0] for w in warnings] == [
        "The 'de' SMS template (test sms_de)",
        "The 'hi' SMS template (test sms_hi)",
    ]
    assert "167 GSM-7 characters and will be sent as 2 SMS segments" in warnings[0]
    assert "77 UCS-2 characters and will be sent as 2 SMS segments" in warnings[1]
