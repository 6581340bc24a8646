"""The documentation stands on its own: every link stays inside the repository and lands."""

import re
from pathlib import Path

import pytest

from identity.config import PROJECT_ROOT

DOCUMENTS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#+ (.+)$", re.MULTILINE)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(document: Path) -> set[str]:
    return {_anchor(heading) for heading in _HEADING.findall(document.read_text())}


def _relative_links(document: Path) -> list[str]:
    links = _LINK.findall(document.read_text())
    return [link for link in links if not re.match(r"[a-z]+:", link)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_link_stays_inside_the_repository_and_lands(document):
    for link in _relative_links(document):
        path_part, _, anchor = link.partition("#")
        target = (document.parent / path_part).resolve() if path_part else document
        assert target.is_relative_to(PROJECT_ROOT), f"{link} leaves the repository"
        assert target.exists(), f"{link}: no such file"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"{link}: no such heading"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_no_mention_of_documents_a_user_does_not_have(document):
    # The product specification the service was built to is not shipped: these pages
    # restate it (docs/behaviour.md), so nothing may send a reader to it.
    text = document.read_text()
    assert "SPEC.md" not in text and "../shared" not in text


# Names in back-quotes that look like settings (upper case with an underscore, or NAME=...)
# and are not: system and library names the pages explain.
_NOT_SETTINGS = {"SO_REUSEPORT", "O_NOFOLLOW", "REMOTE_ADDR", "PATH_INFO"}
_QUOTED_NAME = re.compile(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Z][A-Z0-9_]*(?==))")


def _names_the_project_reads() -> set[str]:
    """Every quoted upper-case name in the code and the Makefile: the settings it reads
    (os.environ, config helpers) and the variables it passes on."""
    sources = [*(PROJECT_ROOT / "identity").rglob("*.py"), PROJECT_ROOT / "Makefile"]
    sources += sorted((PROJECT_ROOT / "tests").glob("*.py"))
    names = set()
    for source in sources:
        text = source.read_text()
        names.update(re.findall(r"[\"']([A-Z][A-Z0-9_]+)[\"']", text))
        names.update(re.findall(r"^([A-Z][A-Z0-9_]+) *[?:]?=", text, re.MULTILINE))
        names.update(re.findall(r"\$\(([A-Z][A-Z0-9_]+)\)", text))
    return names


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_setting_the_pages_name_exists(document):
    known = _names_the_project_reads() | _NOT_SETTINGS
    named = set(_QUOTED_NAME.findall(document.read_text()))
    assert not named - known, f"no such setting in the code: {sorted(named - known)}"


_QUOTED_PATH = re.compile(
    r"`((?:identity|sql|tests|tests_browser|deploy|docs)/[\w./-]*)`|`((?:wsgi|setup)\.\w+|Makefile)`"
)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_file_the_pages_name_exists(document):
    named = {a or b for a, b in _QUOTED_PATH.findall(document.read_text())}
    missing = sorted(name for name in named if not (PROJECT_ROOT / name).exists())
    assert not missing, f"no such file: {missing}"
