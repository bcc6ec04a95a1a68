"""The README stays a front page: at most 200 lines, every docs/ page linked, no dead links."""

import re

from conftest import ROOT

LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def _slug(heading: str) -> str:
    # GitHub's anchors: lower case, punctuation dropped, spaces to hyphens.
    return "#" + re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    linked = {m.group(1) for m in LINK.finditer(readme)}
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages and pages <= linked, sorted(pages - linked)


def test_relative_links_and_anchors_resolve():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for m in LINK.finditer(doc.read_text()):
            target, anchor = m.group(1), m.group(2)
            if "://" in target or target.startswith("mailto:"):
                continue
            path = (doc.parent / target).resolve()
            assert path.exists(), f"{doc.name}: {target}"
            if anchor and path.suffix == ".md":
                heads = {_slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}
                assert anchor in heads, f"{doc.name}: {target}{anchor}"


def test_the_tree_error_points_at_a_section_that_exists():
    from kdq_tf.device.tflm_tree import DOCS

    page, anchor = DOCS.split("#")
    heads = {_slug(h) for h in re.findall(r"^#+ (.+)$", (ROOT / page).read_text(), re.M)}
    assert "#" + anchor in heads
