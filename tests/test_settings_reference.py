"""Every setting is described, and the committed reference is what the models generate."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from otpgate.config import reference
from otpgate.config.section import Section
from otpgate.config.settings import SECTIONS, Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_has_a_description() -> None:
    undescribed = [
        name.upper()
        for name, info in Settings.model_fields.items()
        if not (info.description and info.description.strip())
    ]
    assert not undescribed, f"settings without a description: {', '.join(undescribed)}"


def test_every_component_has_a_title_and_a_description() -> None:
    for section in SECTIONS:
        assert "SECTION_TITLE" in vars(section), section.__name__
        assert section.__doc__ and section.__doc__ != Section.__doc__, section.__name__


def test_each_setting_belongs_to_one_component() -> None:
    declared = [name for section in SECTIONS for name in section.model_fields]
    assert declared == list(Settings.model_fields)


def test_a_field_without_a_description_stops_the_generator() -> None:
    class Bare(Section):
        """A component whose one field says nothing."""

        SECTION_TITLE = "Bare"
        mystery: int = 1

    with pytest.raises(ValueError, match="MYSTERY: the field has no description"):
        reference.variables(Bare)


@pytest.mark.parametrize("path", [reference.ENV_EXAMPLE, reference.MARKDOWN], ids=str)
def test_committed_reference_matches_the_models(path: Path) -> None:
    committed = (ROOT / path).read_text(encoding="utf-8")
    assert committed == reference.generated()[path], (
        f"{path} differs from the settings models: run `make settings-reference`"
    )


def test_check_fails_on_a_hand_edit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in reference.generated():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    assert reference.main(["--check", "--root", str(tmp_path)]) == 0

    edited = tmp_path / reference.ENV_EXAMPLE
    edited.write_text(edited.read_text().replace("PORT=3000", "PORT=3001"))
    assert reference.main(["--check", "--root", str(tmp_path)]) == 1
    message = capsys.readouterr().err
    assert ".env.example differs from the settings models" in message
    assert "+PORT=3000" in message


def test_env_example_sets_only_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Copied to .env as it is, the example changes nothing: what it sets is each
    default, and every variable without one is left commented out."""
    monkeypatch.chdir(tmp_path)
    for variable in [v for s in SECTIONS for v in reference.variables(s)]:
        for name in (variable.name, *variable.aliases):
            monkeypatch.delenv(name, raising=False)
    from_example = Settings(_env_file=ROOT / reference.ENV_EXAMPLE)  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert from_example.model_dump() == defaults.model_dump()
    assert from_example.english_sms_template is None


def test_secrets_are_left_empty() -> None:
    text = (ROOT / reference.ENV_EXAMPLE).read_text()
    for name in [
        "OTP_HASH_SECRET",
        "API_KEYS",
        "ADMIN_API_KEYS",
        "VERIFY_V2_AUTH_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "SMS_WEBHOOK_SECRET",
        "EVENT_WEBHOOK_SECRET",
        "SMTP_PASSWORD",
    ]:
        assert re.search(rf"^# {name}=$", text, re.MULTILINE), name


def test_page_has_one_title_and_no_links_out_of_the_docs() -> None:
    page = reference.markdown()
    assert [line for line in page.splitlines() if line.startswith("# ")] == ["# Settings reference"]
    assert not re.search(r"\]\(", page), "a link: the page is included in the docs site"
    for alias in ("NODE_ENV", "TRUST_PROXY", "SNS_ENDPOINT", "AWS_REGION"):
        assert f"(or `{alias}`)" in page
