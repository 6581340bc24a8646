"""What the wheel needs from the source tree (make test-package builds and runs it): every
folder of code is a package that `packages = find:` finds, and requirements.lock pins
exactly the versions setup.cfg names."""

import configparser
import re

from identity.config import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "identity"


def test_every_folder_of_code_is_a_package():
    folders = {path.parent for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts}
    missing = sorted(str(folder.relative_to(PROJECT_ROOT)) for folder in folders
                     if not (folder / "__init__.py").is_file())
    assert not missing, f"no __init__.py, so not in the wheel: {missing}"


def test_the_lock_file_pins_what_setup_cfg_names():
    setup = configparser.ConfigParser()
    setup.read(PROJECT_ROOT / "setup.cfg")
    named = {
        _normalised(name): version
        for name, version in re.findall(r"^\s*([A-Za-z0-9_.-]+)==(\S+)",
                                        setup["options"]["install_requires"], re.MULTILINE)
    }
    lock = (PROJECT_ROOT / "requirements.lock").read_text()
    locked = {_normalised(name): version
              for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock, re.MULTILINE)}
    assert named and {name: locked.get(name) for name in named} == named, "run make lock"
    assert all("--hash=sha256:" in entry for entry in lock.split("==")[1:]), "a pin without hash"


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
