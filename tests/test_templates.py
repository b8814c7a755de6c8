"""The shipped templates in every language and channel, and TEMPLATES_DIR on top of them."""

from __future__ import annotations

import logging
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from otpgate.cli.config_report import describe
from otpgate.config.settings import ConfigError
from otpgate.domain.catalog import CHANNELS, PARTS, Channel
from otpgate.domain.message import DEFAULT_TEMPLATE, MessageTemplate
from otpgate.templates import SHIPPED, load_catalog
from otpgate.wiring import build_components, build_message, start_up_warnings
from tests.conftest import make_settings
from tests.fakes import CapturingSender

SHIPPED_LANGUAGES = ["de", "en", "es", "fr", "hi", "pt"]
CATALOG = load_catalog()
CODE = "042917"

# Each shipped SMS, rendered with the default settings (6 digits, 5 minutes, otpgate):
# its encoding, length in that encoding's units, and segments. Hindi and Portuguese
# need characters outside GSM-7, so they get 70 units a segment.
SHIPPED_SMS_LAYOUTS = {
    "de": ("GSM-7", 98, 1),
    "en": ("GSM-7", 82, 1),
    "es": ("GSM-7", 77, 1),
    "fr": ("GSM-7", 102, 1),
    "hi": ("UCS-2", 65, 1),
    "pt": ("UCS-2", 66, 1),
}


def test_every_shipped_channel_has_every_shipped_language() -> None:
    for channel in CHANNELS:
        assert CATALOG.languages(channel) == SHIPPED_LANGUAGES, channel


@pytest.mark.parametrize("language", SHIPPED_LANGUAGES)
@pytest.mark.parametrize("channel", CHANNELS)
def test_each_shipped_template_fills_every_value(channel: Channel, language: str) -> None:
    rendered = CATALOG.render(channel, language, code=CODE, app="Acme Pay", minutes=7)
    assert rendered.language == language
    parts = {"text": rendered.text, "subject": rendered.subject, "html": rendered.html}
    for part in PARTS[channel]:
        text = parts[part]
        assert text, part
        assert "{" not in text and "}" not in text, (part, text)  # no placeholder left
        assert "Acme Pay" in text, part  # the app's name
        if part != "subject":
            assert "7" in text, part  # the minutes it expires in
    spoken = ", ".join(CODE)
    if channel == "call":
        assert rendered.text.count(spoken) == 2  # said digit by digit, and repeated
        assert CODE not in rendered.text
    else:
        assert CODE in rendered.text
    if channel == "email":
        assert rendered.subject is not None and CODE in rendered.subject
        assert rendered.html is not None and f">{CODE}</p>" in rendered.html
        assert f'<html lang="{language}">' in rendered.html


def test_the_shipped_english_sms_is_the_default_text() -> None:
    """No locale, no SMS_MESSAGE_TEMPLATE: exactly the text otpgate always sent."""
    assert CATALOG.template("sms", "en").text == DEFAULT_TEMPLATE


def test_shipped_sms_segments(caplog: pytest.LogCaptureFixture) -> None:
    layouts = MessageTemplate(catalog=CATALOG).sms_layouts(code_length=6, ttl_seconds=300)
    found = {lang: (lay.encoding, lay.units, lay.segments) for lang, lay in layouts.items()}
    for language, (encoding, units, segments) in found.items():
        print(f"sms {language}: {encoding}, {units} units, {segments} segment(s)")
    assert found == SHIPPED_SMS_LAYOUTS


def test_check_config_shows_each_sms_language(tmp_path: Path) -> None:
    report = describe(make_settings(tmp_path, sms_webotp_domain="example.com"))
    assert re.search(
        r"\(sms template\) hi +UCS-2, 87 of 70 characters, 2 segments"
        r" \(shipped templates/sms/hi.txt\)",
        report,
    )
    assert re.search(r"\(sms template\) en +GSM-7, 104 of 160 characters, 1 segment \(", report)
    assert "warning: The 'hi' SMS template" in report


@pytest.mark.parametrize(
    ("locale", "language"),
    [("pt-BR", "pt"), ("zz", "en"), ("EN-gb", "en"), ("es-419", "es"), (None, "en")],
)
def test_fallback(locale: str | None, language: str) -> None:
    for channel in CHANNELS:
        assert CATALOG.language_for(channel, locale) == language


def test_the_shipped_files_are_package_data() -> None:
    """Every shipped template matches a package-data glob, so a wheel carries it."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["otpgate"]
    shipped = [
        f"templates/{channel.name}/{entry.name}"
        for channel in SHIPPED.iterdir()
        if channel.is_dir() and channel.name in PARTS
        for entry in channel.iterdir()
    ]
    assert len(shipped) == 6 * len(SHIPPED_LANGUAGES)
    for path in shipped:
        assert any(fnmatch(path, glob) for glob in globs), path


# --- TEMPLATES_DIR ---------------------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def templates_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    return write(tmp_path / "templates", files)


def test_a_directory_replaces_and_adds_templates(tmp_path: Path) -> None:
    root = templates_dir(
        tmp_path,
        {
            "sms/es.txt": "Tu clave de {app}: {code}\n",  # the final newline is dropped
            "sms/it.txt": "{code} è il tuo codice {app}.",
            "email/ES.subject.txt": "Clave de {app}",  # a tag in any case
            ".DS_Store": "",  # dotfiles are skipped
        },
    )
    settings = make_settings(tmp_path, templates_dir=root)
    message = build_message(settings)
    assert message.render(CODE, 300, locale="es-MX") == f"Tu clave de otpgate: {CODE}"
    assert message.render(CODE, 300, locale="it") == f"{CODE} è il tuo codice otpgate."
    assert message.render(CODE, 300, locale="fr").startswith(f"{CODE} est votre code")
    email = message.compose("email", CODE, 300, locale="es")
    assert email.subject == "Clave de otpgate"  # replaced ...
    assert email.text.startswith("Hola:")  # ... the other parts still shipped
    assert message.catalog.template("sms", "es").origin == f"{root}/sms/es.txt"


def test_the_directory_english_sms_is_sent_unless_sms_message_template_is_set(
    tmp_path: Path,
) -> None:
    root = templates_dir(tmp_path, {"sms/en.txt": "Code {code} for {app}"})
    mine = build_message(make_settings(tmp_path, templates_dir=root))
    assert mine.render(CODE, 300) == f"Code {CODE} for otpgate"
    settings = make_settings(tmp_path, templates_dir=root, sms_message_template="{code} wins")
    assert build_message(settings).render(CODE, 300, locale="en-US") == f"{CODE} wins"
    [warning] = start_up_warnings(settings)
    assert warning == (
        f"TEMPLATES_DIR: {root}/sms/en.txt is not used: SMS_MESSAGE_TEMPLATE is set,"
        " and it is the English SMS"
    )


def test_the_setting_is_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = templates_dir(tmp_path, {"sms/es.txt": "{code}!"})
    monkeypatch.setenv("TEMPLATES_DIR", str(root))
    assert build_message(make_settings(tmp_path)).render(CODE, 300, locale="es") == f"{CODE}!"
    monkeypatch.setenv("TEMPLATES_DIR", "")
    assert make_settings(tmp_path).templates_dir is None  # blank means unset


def refused(tmp_path: Path, files: dict[str, str] | None, **overrides: Any) -> str:
    root = tmp_path / "templates"
    if files is not None:
        write(root, files)
    settings = make_settings(tmp_path, templates_dir=root, **overrides)
    with pytest.raises(ConfigError) as caught:
        build_components(settings, sender=CapturingSender())
    return str(caught.value)


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        (None, "{root}: no such directory"),
        ({"sms/es.txt": "Tu clave: {clave}"}, "{root}/sms/es.txt: unknown placeholder {clave}"),
        ({"sms/es.txt": "Tu clave de {app}"}, "{root}/sms/es.txt: must contain {code}"),
        ({"call/de.txt": ""}, "{root}/call/de.txt: is empty"),
        ({"email/fr.html": "<p>{app}</p>"}, "{root}/email/fr.html: must contain {code}"),
        ({"email/fr.subject.txt": "a\nb"}, "{root}/email/fr.subject.txt: a subject must be"),
        ({"sms/pt_BR.txt": "{code}"}, "{root}/sms/pt_BR.txt: 'pt_BR' is not a BCP 47"),
        ({"sms/es.html": "{code}"}, "{root}/sms/es.html: not a template file name"),
        ({"fax/en.txt": "{code}"}, "{root}/fax: not a channel directory"),
        ({"es.txt": "{code}"}, "{root}/es.txt: not a channel directory"),
        ({"sms/es.txt/x": "{code}"}, "{root}/sms/es.txt: not a file"),
        ({"email/it.txt": "{code}"}, "{root}/email/it.txt: the email template in 'it' lacks"),
        (
            {"sms/pt-BR.txt": "{code}", "sms/pt-br.txt": "{code}"},
            "{root}/sms/pt-br.txt: the same language as {root}/sms/pt-BR.txt",
        ),
        (
            {"sms/es.txt": "{code} {purpose}"},
            "{root}/sms/es.txt: uses {purpose}, which is shown only with SMS_SHOW_PURPOSE=true",
        ),
    ],
)
def test_unusable_templates_stop_start_up_naming_the_variable_and_file(
    tmp_path: Path, files: dict[str, str] | None, reason: str
) -> None:
    root = tmp_path / "templates"
    message = refused(tmp_path, files)
    assert message.startswith("TEMPLATES_DIR: ")
    assert reason.replace("{root}", str(root)) in message


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "templates"
    (root / "sms").mkdir(parents=True)
    (root / "sms" / "de.txt").write_bytes("{code} für".encode("latin-1"))
    assert f"TEMPLATES_DIR: {root}/sms/de.txt: not UTF-8 text" in refused(tmp_path, {})


def test_a_file_is_refused_where_a_directory_is_expected(tmp_path: Path) -> None:
    (tmp_path / "templates").write_text("not a directory")
    assert "is not a directory" in refused(tmp_path, None)


def test_purpose_is_allowed_with_sms_show_purpose(tmp_path: Path) -> None:
    root = templates_dir(tmp_path, {"sms/es.txt": "{code} para {purpose}"})
    settings = make_settings(tmp_path, templates_dir=root, sms_show_purpose=True)
    assert build_message(settings).render(CODE, 300, "login", "es") == f"{CODE} para login"


async def test_start_up_warns_for_each_language_that_needs_two_segments(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = templates_dir(tmp_path, {"sms/hi.txt": "{code} " + "कृपया " * 12})
    settings = make_settings(tmp_path, templates_dir=root)
    with caplog.at_level(logging.WARNING, logger="otpgate"):
        components = build_components(settings, sender=CapturingSender())
    await components.close()
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert re.match(
        rf"The 'hi' SMS template \({re.escape(str(root))}/sms/hi.txt\) renders to 78 UCS-2"
        " characters and will be sent as 2 SMS segments",
        warning,
    )
