"""Nothing a learner cannot open: every relative link in README.md, docs/ and the notebooks resolves to a file of
the repository (and its #anchor to a heading or id in that file); no page names a path outside the repository or
the notes the project was built from; README's chapter table lists every notebook."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "data").glob("*.md")),
        *sorted((ROOT / "benchmarks").glob("*.md"))]
PAGES = DOCS + NOTEBOOKS

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)|href=\"([^\"]+)\"")
# What a learner's copy of the repository does not hold: the workshop's notes and folders beside the checkout.
OUTSIDE = re.compile(r"FACTS(\.md)?\b|\.\./shared\b|/work/|STYLE\.md|seed (note|document)")


def _text(page: Path) -> str:
    """A page's words: a notebook's markdown and code sources (outputs are what the code prints)."""
    if page.suffix != ".ipynb":
        return page.read_text(encoding="utf-8")
    cells = json.loads(page.read_text(encoding="utf-8"))["cells"]
    rendered = ["".join(o["data"]["text/markdown"]) for c in cells for o in c.get("outputs", [])
                if "text/markdown" in o.get("data", {})]  # tables a cell displays (chapter 00's map) hold links too
    return "\n".join(["".join(c["source"]) for c in cells] + rendered)


def _anchors(target: Path) -> set[str]:
    """The anchors a Markdown file or notebook offers: explicit ids and GitHub-style heading slugs."""
    text = _text(target)
    ids = set(re.findall(r"<a id=\"([^\"]+)\"", text))
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        ids.add(slug)
    return ids


def _prose(text: str) -> str:
    """Text without code: fenced blocks and inline code spans hold Python (`x[i](y)`), not links."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))


def _links(page: Path):
    for match in LINK.finditer(_prose(_text(page))):
        link = match.group(1) or match.group(2)
        if re.match(r"^[a-z]+:", link) or link.startswith("#") and page.suffix == ".ipynb":
            continue  # a web address, or a jump inside the same notebook (JupyterLab's own headings)
        yield link


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_relative_links_resolve(page):
    broken = []
    for link in _links(page):
        path, _, anchor = unquote(link).partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link} (no file {target})")
        elif ROOT not in target.parents and target != ROOT:
            broken.append(f"{link} (outside the repository)")
        elif anchor and target.is_file() and target.suffix in (".md", ".ipynb") and anchor not in _anchors(target):
            broken.append(f"{link} (no anchor #{anchor} in {target.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: links that do not resolve: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_no_page_names_what_is_outside_the_repository(page):
    hits = sorted({m.group(0) for m in OUTSIDE.finditer(_text(page))})
    assert not hits, f"{page.relative_to(ROOT)} names files a learner's checkout does not have: {hits}"


def test_readme_lists_every_notebook():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = {unquote(m) for m in re.findall(r"\]\((notebooks/[^)#\s]+\.ipynb)\)", readme)}
    missing = [p.relative_to(ROOT).as_posix() for p in NOTEBOOKS if p.relative_to(ROOT).as_posix() not in listed]
    assert not missing, f"README.md's chapter table does not list: {missing}"
