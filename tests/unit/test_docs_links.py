"""The README and the pages under docs/: every relative link reaches a file (and a heading, when it names one), and
the README stays a front door a new user reads in minutes."""

from __future__ import annotations

import re
from pathlib import Path

from app.core.paths import REPO

README_MAX_LINES = 260

_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def _pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _prose(text: str) -> str:
    """The text a reader sees as prose: code blocks and code spans hold examples, not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text())):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _broken_links(page: Path) -> list[str]:
    broken = []
    for target in _LINK.findall(_prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no such heading")
    return broken


def test_every_relative_link_in_the_readme_and_docs_resolves() -> None:
    broken = {page.relative_to(REPO).as_posix(): _broken_links(page) for page in _pages()}
    assert {page: links for page, links in broken.items() if links} == {}


def test_the_link_check_sees_links_and_refuses_broken_ones(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A section: `code`\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md) [ok](other.md#a-section-code) ![img](other.md) [web](https://example.com)\n"
        "[gone](missing.md) [bad anchor](other.md#nothing) `[not a link](missing.md)`\n"
        "```\n[in a block](missing.md)\n```\n"
    )
    assert _broken_links(page) == ["missing.md: no such file", "other.md#nothing: no such heading"]


def test_the_readme_stays_short() -> None:
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move depth to docs/"
