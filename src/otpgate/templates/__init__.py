"""The message templates shipped with otpgate, with TEMPLATES_DIR's on top.

One UTF-8 file per text, laid out the same here and in TEMPLATES_DIR::

    sms/<lang>.txt    whatsapp/<lang>.txt    call/<lang>.txt
    email/<lang>.subject.txt    email/<lang>.txt    email/<lang>.html

``<lang>`` is a BCP 47 tag in any case (``pt-BR.txt`` is ``pt-br``). A file in
TEMPLATES_DIR replaces the shipped one of the same name or adds a language. Read once
at start-up; the surrounding whitespace of a file is dropped (its final newline above
all). A file that cannot be used is refused, naming it: a typo in a file name would
otherwise leave a language silently unused. Dotfiles (an editor's, the OS's) are skipped.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from otpgate.domain.catalog import (
    CHANNELS,
    PARTS,
    Channel,
    Part,
    Template,
    TemplateCatalog,
    TemplateKey,
)
from otpgate.domain.locale import is_locale

SHIPPED = files("otpgate.templates")
SHIPPED_ORIGIN = "shipped templates/"  # how the package's files are named in messages
_SUFFIXES: tuple[tuple[str, Part], ...] = (
    (".subject.txt", "subject"),  # before ".txt", which it ends with
    (".txt", "text"),
    (".html", "html"),
)
_CHANNELS: dict[str, Channel] = {channel: channel for channel in CHANNELS}
_LAYOUT = (
    "sms/<lang>.txt, whatsapp/<lang>.txt, call/<lang>.txt,"
    " email/<lang>.subject.txt, email/<lang>.txt, email/<lang>.html"
)


class TemplateFileError(Exception):
    """A template file or directory that cannot be used; the message names it."""


def load_catalog(overrides: Path | None = None) -> TemplateCatalog:
    """The shipped templates, each replaced or joined by ``overrides``' files."""
    templates = read_templates(SHIPPED, SHIPPED_ORIGIN, strict=False)
    if overrides is not None:
        if not overrides.is_dir():
            problem = "is not a directory" if overrides.exists() else "no such directory"
            raise TemplateFileError(f"{overrides}: {problem}")
        templates.update(read_templates(overrides, str(overrides).rstrip("/") + "/"))
    try:
        return TemplateCatalog(templates)
    except ValueError as exc:
        raise TemplateFileError(str(exc)) from None


def read_templates(
    root: Traversable, origin: str, *, strict: bool = True
) -> dict[TemplateKey, Template]:
    """Every template file under ``root``; ``origin`` names it in messages. Not
    ``strict``: whatever is not a channel directory is skipped (the package's modules)."""
    found: dict[TemplateKey, Template] = {}
    for directory in sorted(root.iterdir(), key=lambda entry: entry.name):
        name = directory.name
        channel = _CHANNELS.get(name)
        if name.startswith(".") or (not strict and channel is None):
            continue
        if channel is None or not directory.is_dir():
            raise TemplateFileError(
                f"{origin}{name}: not a channel directory (sms, whatsapp, call, email);"
                f" expected {_LAYOUT}"
            )
        for entry in sorted(directory.iterdir(), key=lambda entry: entry.name):
            if not entry.name.startswith("."):
                key, template = _read(entry, channel, f"{origin}{name}/{entry.name}")
                if key in found:
                    raise TemplateFileError(
                        f"{template.origin}: the same language as {found[key].origin}"
                    )
                found[key] = template
    return found


def _read(entry: Traversable, channel: Channel, origin: str) -> tuple[TemplateKey, Template]:
    for suffix, part in _SUFFIXES:
        if entry.name.endswith(suffix) and part in PARTS[channel]:
            language = entry.name.removesuffix(suffix)
            break
    else:
        expected = ", ".join(f"<lang>{s}" for s, p in _SUFFIXES if p in PARTS[channel])
        raise TemplateFileError(f"{origin}: not a template file name; expected {expected}")
    if not entry.is_file():
        raise TemplateFileError(f"{origin}: not a file")
    if not is_locale(language):
        raise TemplateFileError(
            f"{origin}: {language!r} is not a BCP 47 language tag (such as es or pt-BR)"
        )
    try:
        text = entry.read_bytes().decode("utf-8-sig")  # a BOM, as some editors write
    except UnicodeDecodeError:
        raise TemplateFileError(f"{origin}: not UTF-8 text") from None
    except OSError as exc:
        raise TemplateFileError(f"{origin}: cannot be read ({exc.strerror or exc})") from None
    text = text.replace("\r\n", "\n").strip()
    return (channel, language.lower(), part), Template(text, origin)
