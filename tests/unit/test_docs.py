"""The README and the manual hold together: no file points outside the
repository, every cited design anchor exists, every page is in the nav, the
README stays a front door, and its test command is the one CI runs.

(`mkdocs build --strict` in .ci/run checks the links between the pages; the
shell examples run in tests/e2e/test_readme_examples.py.)
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# Spelled in two parts so that this file does not match itself.
OUTSIDE = ("../" + "shared", "DESIGN" + ".md")
CITED_ANCHOR = re.compile(r"docs/design\.md((?:#[a-z0-9-]+)(?:,? (?:and )?#[a-z0-9-]+)*)")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    paths = [ROOT / name for name in names.splitlines() if (ROOT / name).is_file()]
    texts = []
    for path in paths:
        try:
            path.read_text()
        except UnicodeDecodeError:
            continue  # binary
        texts.append(path)
    return texts


def slug(heading: str) -> str:
    """The anchor MkDocs' toc extension (and GitHub) gives a heading."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"[\s]+", "-", text)


def design_anchors() -> set[str]:
    return {slug(line.lstrip("#")) for line in (DOCS / "design.md").read_text().splitlines()
            if re.match(r"^#{2,3} ", line)}


def test_no_file_points_outside_the_repository() -> None:
    """A fresh clone has everything a comment or a page refers to: the design
    contract is docs/design.md, never a file beside the checkout."""
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in tracked_text_files()
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if any(marker in line for marker in OUTSIDE)]
    assert not found, "points outside the repository (cite docs/design.md#<anchor>):\n" + "\n".join(found)


def test_every_cited_design_anchor_exists() -> None:
    anchors = design_anchors()
    assert {"the-job", "rest-contract", "replacement-rule", "topics-and-messages", "delivery-guarantees",
            "data-loading", "test-infrastructure"} <= anchors
    missing = []
    for path in tracked_text_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in CITED_ANCHOR.finditer(line):
                for anchor in re.findall(r"#([a-z0-9-]+)", match.group(1)):
                    if anchor not in anchors:
                        missing.append(f"{path.relative_to(ROOT)}:{number}: #{anchor}")
    assert not missing, f"docs/design.md has no such section (its anchors: {sorted(anchors)}):\n" + "\n".join(missing)


def nav_pages() -> list[str]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return [page for entry in config["nav"] for page in entry.values()]


def test_every_page_is_in_the_nav_once() -> None:
    pages = nav_pages()
    assert len(pages) == len(set(pages)), pages
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.glob("*.md"))
    assert sorted(pages) == on_disk, "mkdocs.yml's nav and docs/*.md differ"


def test_the_readme_is_a_front_door_that_links_every_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250, "the README is the front door: the manual holds the rest"
    # Relative links to the pages (they work on GitHub, and the files are in the sdist).
    linked = set(re.findall(r"\]\(docs/([a-z-]+\.md)\)", readme))
    assert linked == set(nav_pages()), set(nav_pages()) ^ linked


def test_ci_runs_the_readme_test_command() -> None:
    """The README says how to run the tests; .ci/run runs the same command
    (in its virtual environment) and builds the manual strictly."""
    readme = (ROOT / "README.md").read_text()
    assert 'pip install -e ".[test]" && python -m pytest' in readme
    ci = (ROOT / ".ci" / "run").read_text()
    runs = [line for line in ci.splitlines() if re.search(r"\bpytest\b", line) and not line.lstrip().startswith(("#", "echo"))]
    assert runs, "CI runs no pytest"
    assert all(".venv/bin/python -m pytest" in line for line in runs), runs
    assert "mkdocs build --strict" in ci
    assert "mkdocs build --strict --quiet" not in ci  # --quiet makes mkdocs 1.6 ignore --strict's warnings
