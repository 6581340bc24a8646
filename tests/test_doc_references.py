"""Every file path and setting name the documentation quotes exists in the repository
(a page that sends a reader to a file or a setting that is not there misleads)."""

import re
from pathlib import Path

import pytest

from identity.config import PROJECT_ROOT

DOCUMENTS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
_QUOTED = re.compile(r"`([^`\s]+)`")
_PATH = re.compile(r"(?:identity|tests|tests_browser|sql|docs|deploy)/[\w./*-]+")
_SETTING = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
# Where settings are read or set: the code, the build, the deployment files, the tests.
_CODE = [
    *PROJECT_ROOT.glob("identity/**/*.py"),
    *PROJECT_ROOT.glob("tests/*"),
    *(path for path in PROJECT_ROOT.glob("deploy/**/*") if path.is_file()),
    PROJECT_ROOT / "Makefile",
    PROJECT_ROOT / "wsgi.py",
    PROJECT_ROOT / ".ci/run",
]


def quoted(document: Path) -> set[str]:
    return set(_QUOTED.findall(document.read_text()))


@pytest.fixture(scope="module")
def code_text() -> str:
    return "\n".join(path.read_text(errors="replace") for path in _CODE if path.is_file())


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_quoted_path_exists(document):
    for text in quoted(document):
        found = _PATH.match(text)
        if found:
            path = found.group(0).rstrip(".")
            assert any(PROJECT_ROOT.glob(path)), f"{document.name} quotes {path}: no such file"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_quoted_setting_is_read_somewhere(document, code_text):
    for text in quoted(document):
        name = text.split("=")[0]
        if _SETTING.fullmatch(name):
            assert name in code_text, f"{document.name} quotes {name}: no code reads it"
