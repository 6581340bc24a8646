"""The package's layers (docs/design.md): web → customers / feed / importing → database.

Each module's imports are read from its source, so the test sees exactly what the module
asks for, whatever was imported before it."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "identity"
# Third-party modules that belong to the HTTP layer and the process layer only.
WEB_ONLY = ("flask", "werkzeug", "waitress", "jinja2")
DOMAIN = ("customers", "feed", "importing")


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules a file imports (relative imports resolved)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            else:
                names.add(node.module)
    return names


def modules_of(*folders: str) -> list[Path]:
    return [path for folder in folders for path in sorted((PACKAGE / folder).rglob("*.py"))]


@pytest.mark.parametrize("path", modules_of(*DOMAIN), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_domain_never_imports_flask_waitress_or_the_web_layer(path):
    imports = imported_modules(path)
    offending = {
        name
        for name in imports
        if name.split(".")[0] in WEB_ONLY
        or name.startswith(
            ("identity.web", "identity.process.server", "identity.process.supervisor")
        )
    }
    assert not offending, f"{path.name} imports {sorted(offending)}"


@pytest.mark.parametrize("path", modules_of("database"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_database_layer_imports_no_capability(path):
    imports = imported_modules(path)
    offending = {
        name
        for name in imports
        if name.startswith(
            (
                "identity.web",
                "identity.customers",
                "identity.feed",
                "identity.importing",
                "identity.process",
            )
        )
    }
    assert not offending, f"{path.name} imports {sorted(offending)}"
