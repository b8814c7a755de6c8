"""The README stays a short front door, and every link in it leads somewhere.

The details live in docs/ (the site `make docs` builds, whose strict build checks the
links between its pages); the README links into those pages by relative file links,
which only this test checks.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 300

# [text](target) or [text](target "title"), outside fenced code blocks.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def _prose(text: str) -> list[str]:
    """The lines of a Markdown text outside its fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _slug(heading: str) -> str:
    """The id Python-Markdown's toc extension (MkDocs's default) gives a heading."""
    text = heading.replace("`", "").replace("*", "")
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    return {
        _slug(match.group(1))
        for line in _prose(page.read_text("utf-8"))
        if (match := HEADING.match(line))
    }


def _relative_links() -> list[str]:
    links = [m.group(1) for line in _prose(README.read_text("utf-8")) for m in LINK.finditer(line)]
    return [link for link in links if not re.match(r"^[a-z][a-z0-9+.-]*:|^#", link)]


def test_readme_is_short() -> None:
    lines = README.read_text("utf-8").count("\n")
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines (at most {MAX_README_LINES}): move detail into docs/"
    )


def test_readme_links_point_at_files_that_exist() -> None:
    links = _relative_links()
    assert links, "the README links into no page of docs/"
    for link in links:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), f"README.md links to {link}, but {path} does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), (
                f"README.md links to {link}, but {path} has no heading with that anchor"
            )


def test_the_slug_is_mkdocs_s() -> None:
    assert _slug("Redis: URL forms, TLS, Sentinel and Cluster") == (
        "redis-url-forms-tls-sentinel-and-cluster"
    )
    assert _slug("Email delivery (SMTP)") == "email-delivery-smtp"
    assert _slug("What the fast paths cost and buy (`FAST_PATH`)") == (
        "what-the-fast-paths-cost-and-buy-fast_path"
    )
