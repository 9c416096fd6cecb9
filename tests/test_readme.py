"""The README is the front door: its quick start is a contract (tests/test_demo.py runs its
first command), it stays short, and every link in it and in docs/ leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
# [text](target) in Markdown, not inside code; targets with a scheme are other sites.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def quick_start_commands() -> list[str]:
    """The commands of the README's quick start (tests/test_demo.py runs the first)."""
    section = README.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_quick_start_is_two_commands() -> None:
    assert quick_start_commands() == ["bash scripts/demo.sh", "bash scripts/test.sh"]


def test_the_readme_is_a_front_door() -> None:
    assert len(README.splitlines()) <= 200


def anchors(page: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as -."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", _without_code(page), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def _without_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def test_every_link_in_the_readme_and_docs_resolves() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in LINK.findall(_without_code(page.read_text())):
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {Path(target.partition("#")[0]).name for target in LINK.findall(README)}
    pages = {page.name for page in (ROOT / "docs").glob("*.md")}
    assert pages - linked == set()
