"""The settings reference, generated from the settings models.

Writes ``.env.example`` (every variable, grouped by component, its description as a
comment) and ``docs/reference/settings.md`` (one table per component). With
``--check`` it writes nothing and exits 1 when either file differs from what the
models generate::

    python -m otpgate.config.reference [--check] [--root DIR]

``make settings-reference`` runs it from the repository's root.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import textwrap
import types
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo

from otpgate.config.observability import ObservabilitySettings
from otpgate.config.section import Section
from otpgate.config.settings import SECTIONS

ENV_EXAMPLE = Path(".env.example")
MARKDOWN = Path("docs/reference/settings.md")
WIDTH = 88
UNSET = "—"


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    aliases: tuple[str, ...]
    kind: str  # the type, and its bounds; for allowed values, "one of"
    default: str | None  # as written in a .env file; None: unset
    choices: tuple[str, ...]  # the values allowed, when only a few are
    description: str
    secret: bool = False  # left empty in .env.example
    commented: bool = False  # commented out in .env.example, even with a default


# Read by a library from the process environment (not from .env), so no settings field
# declares it; documented with the component that uses it.
ENVIRONMENT_ONLY: dict[type[Section], tuple[Variable, ...]] = {
    ObservabilitySettings: (
        Variable(
            "PROMETHEUS_MULTIPROC_DIR",
            (),
            "path",
            None,
            (),
            "The directory where several workers keep their metrics, read from the process"
            " environment only (not from .env); unset: `otpgate serve` makes a temporary one"
            " when WORKERS > 1.",
        ),
    ),
}


def variables(section: type[Section]) -> list[Variable]:
    """A component's variables: its fields in order, then its environment-only ones."""
    found = [_variable(name, info) for name, info in section.model_fields.items()]
    return found + list(ENVIRONMENT_ONLY.get(section, ()))


def _variable(name: str, info: FieldInfo) -> Variable:
    if not info.description:
        raise ValueError(f"{name.upper()}: the field has no description")
    alias = info.validation_alias
    names = [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else []
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    base, _ = _unwrapped(info.annotation)
    choices = tuple(str(v) for v in get_args(base)) if get_origin(base) is Literal else ()
    return Variable(
        name=names[0] if names else name.upper(),
        aliases=tuple(names[1:]),
        kind="one of" if choices else _kind(info.annotation, info.metadata),
        default=_default(info),
        choices=choices,
        description=info.description,
        secret=bool(extra.get("secret")) or _holds_secret(info.annotation),
        commented=bool(extra.get("commented")),
    )


def _unwrapped(annotation: Any) -> tuple[Any, list[Any]]:
    """The type without Annotated or None, and the metadata found on the way."""
    metadata: list[Any] = []
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *more = get_args(annotation)
            for item in more:
                metadata += item.metadata if isinstance(item, FieldInfo) else [item]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation, metadata
            annotation = rest[0]
        else:
            return annotation, metadata


def _holds_secret(annotation: Any) -> bool:
    return SecretStr in (annotation, *get_args(annotation)) or any(
        _holds_secret(arg) for arg in get_args(annotation) if get_args(arg)
    )


_KINDS: dict[Any, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    Decimal: "number",
    str: "text",
    Path: "path",
    SecretStr: "secret",
}


def _kind(annotation: Any, field_metadata: Sequence[Any]) -> str:
    base, metadata = _unwrapped(annotation)
    origin = get_origin(base)
    if origin is list:
        return "comma-separated list"
    if origin is dict:
        return "comma-separated entries"
    kind = _KINDS.get(base, getattr(base, "__name__", str(base)))
    bounds = _bounds([*field_metadata, *metadata])
    return f"{kind}, {bounds}" if bounds else kind


def _bounds(metadata: Sequence[Any]) -> str:
    ge = gt = le = None
    length = None
    for item in metadata:  # pydantic's constraint objects (annotated_types')
        ge = getattr(item, "ge", ge)
        gt = getattr(item, "gt", gt)
        le = getattr(item, "le", le)
        length = getattr(item, "min_length", length)
    if ge is not None and le is not None:
        return f"{_number(ge)} to {_number(le)}"
    parts = [
        f"at least {_number(ge)}" if ge is not None else "",
        f"more than {_number(gt)}" if gt is not None else "",
        f"at most {_number(le)}" if le is not None else "",
        "not empty" if length else "",
    ]
    return ", ".join(part for part in parts if part)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default(info: FieldInfo) -> str | None:
    value = info.get_default(call_default_factory=True, validated_data={})
    if value is None or value in ([], {}):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number(value)
    return str(value)


# --- .env.example ---------------------------------------------------------------------------


def env_example() -> str:
    lines = [
        *_comment(
            "otpgate settings, generated from the settings models (src/otpgate/config/) by"
            " make settings-reference: edit the models, not this file."
        ),
        *_comment(
            "Copy to .env and adjust; the environment overrides .env. Every variable is"
            " optional in development, and a commented one is unset; `otpgate check-config`"
            " validates them. The full reference: docs/reference/settings.md."
        ),
    ]
    for section in SECTIONS:
        lines += ["", f"# --- {section.SECTION_TITLE} ".ljust(WIDTH, "-")]
        lines += _comment(_docstring(section))
        for variable in variables(section):
            lines += ["", *_comment(variable.description)]
            kind = " | ".join(variable.choices) if variable.choices else variable.kind
            facts = [f"Type: {kind}."]
            if variable.aliases:
                facts.append(f"Also read as {', '.join(variable.aliases)}.")
            lines += _comment(" ".join(facts))
            lines.append(_assignment(variable))
    return "\n".join(lines) + "\n"


def _assignment(variable: Variable) -> str:
    if variable.secret or variable.default is None:
        return f"# {variable.name}="
    value = variable.default
    if re.search(r"[\s#'\"\\]", value):
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    line = f"{variable.name}={value}"
    return f"# {line}" if variable.commented else line


def _comment(text: str) -> list[str]:
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent="# ",
        subsequent_indent="# ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _docstring(section: type[Section]) -> str:
    return " ".join((section.__doc__ or "").split())


# --- docs/reference/settings.md -------------------------------------------------------------


def markdown() -> str:
    parts = [
        "# Settings reference",
        "",
        "Every setting of otpgate, by component. Each is read from the environment and"
        " from a `.env` file in the working directory (the environment wins); names are"
        " case-insensitive. A bad value stops start-up with the variable's name, and"
        " `otpgate check-config` validates the settings and prints them, secrets redacted."
        " `APP_ENV=production` turns on the checks production needs.",
        "",
        "This page and `.env.example` are generated from the settings models in"
        " `src/otpgate/config/` by `make settings-reference`; a test fails when either"
        " differs from the models.",
    ]
    every = [v for section in SECTIONS for v in variables(section)]
    names = re.compile(
        r"\b(?:"
        + "|".join(sorted((n for v in every for n in (v.name, *v.aliases)), key=len)[::-1])
        + r")\b(?:=[\w.*-]+)?|\b[A-Z][A-Z0-9_]*_\*"
    )
    for section in SECTIONS:
        parts += ["", f"## {section.SECTION_TITLE}", "", _inline(_docstring(section), names), ""]
        parts += ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
        for variable in variables(section):
            name = f"`{variable.name}`" + "".join(f" (or `{a}`)" for a in variable.aliases)
            kind = ", ".join(f"`{c}`" for c in variable.choices) or variable.kind
            default = UNSET if variable.default is None else f"`{variable.default}`"
            cells = [name, kind, default, _inline(variable.description, names)]
            parts.append("| " + " | ".join(cells) + " |")
    return "\n".join(parts) + "\n"


def _inline(text: str, names: re.Pattern[str]) -> str:
    """Prose for a Markdown table cell: variable names as code, no HTML, no stray
    emphasis or cell separators; spans already in backticks are kept as they are."""
    out = []
    for index, piece in enumerate(text.split("`")):
        if index % 2:
            out.append(f"`{piece}`")
            continue
        start = 0
        for found in names.finditer(piece):
            out += [_escaped(piece[start : found.start()]), f"`{found.group(0)}`"]
            start = found.end()
        out.append(_escaped(piece[start:]))
    return "".join(out)


def _escaped(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for special in "*|[]":
        text = text.replace(special, "\\" + special)
    return text


# --- the command ----------------------------------------------------------------------------


def generated() -> dict[Path, str]:
    return {ENV_EXAMPLE: env_example(), MARKDOWN: markdown()}


def drifted(root: Path) -> list[str]:
    """One message, with a diff, per committed file that differs from the models."""
    problems = []
    for path, text in generated().items():
        target = root / path
        committed = target.read_text(encoding="utf-8") if target.is_file() else ""
        if committed != text:
            diff = difflib.unified_diff(
                committed.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{path} (committed)",
                f"{path} (generated)",
                n=1,
            )
            problems.append(
                f"{path} differs from the settings models; run `make settings-reference`"
                " and commit the result.\n" + "".join(diff)
            )
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m otpgate.config.reference",
        description="Write .env.example and docs/reference/settings.md from the settings models.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when either file differs from what the models generate",
    )
    parser.add_argument(
        "--root", type=Path, default=Path(), help="the repository's root (default: here)"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = drifted(args.root)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    for path, text in generated().items():
        target = args.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
