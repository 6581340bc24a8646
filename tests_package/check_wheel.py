"""`make test-package`: the wheel works on its own, outside the source tree.

Builds the wheel, installs it with the locked dependencies (requirements.lock, hashes
checked) into a new virtual environment in a temporary folder, and from another folder
runs the installed `identity` command only: the migrations onto a fresh database (an
embedded PostgreSQL started here, from the development environment), the server, one
checkout, an import of a small file, the audit, /metrics' version, and a SIGTERM stop.
The systemd units, pointed at the installed command, pass `systemd-analyze verify`.
Nothing of the checkout is on the installed command's path; the script checks that too.
Exits 0 when every step passed, else 1 naming the step.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from identity.config import DISTRIBUTION  # noqa: E402
from identity.dev.embedded import EmbeddedPostgres, free_port  # noqa: E402

READY_TIMEOUT_S = 60
ORDERS = (
    "email,phoneNumber,createdAt\n"
    "doc@hillvalley.edu,555-0100,2021-03-04\n"
    "marty@hillvalley.edu,555-0100,2021-03-05\n"
    "not-an-email,,2021-03-06\n"
)


class StepFailed(Exception):
    pass


def step(
    name: str, command: list[str], cwd: Path, env: dict, expect: str = "", status: int = 0
) -> str:
    print(f"test-package: {name}: {' '.join(command)}", flush=True)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode != status or expect not in output:
        raise StepFailed(f"{name}: status {result.returncode}, output:\n{output}")
    return output


def build_and_install(work: Path) -> Path:
    """The wheel, installed into work/venv with the locked dependencies; its bin folder."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # setuptools builds in build/ and never removes what is gone from the source.
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    step("build", [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                   "--wheel-dir", str(work / "dist"), str(ROOT)], work, env)
    (wheel,) = (work / "dist").glob("*.whl")
    step("venv", [sys.executable, "-m", "venv", str(work / "venv")], work, env)
    pip = str(work / "venv" / "bin" / "pip")
    step("install dependencies", [pip, "install", "--quiet", "--require-hashes",
                                  "-r", str(ROOT / "requirements.lock")], work, env)
    step("install wheel", [pip, "install", "--quiet", "--no-deps", str(wheel)], work, env)
    return work / "venv" / "bin"


def check_service_units(bin_dir: Path, work: Path) -> None:
    """deploy/systemd's units, pointed at this installation, pass systemd's own check."""
    if not shutil.which("systemd-analyze"):
        print("test-package: systemd-analyze missing: service units not checked", flush=True)
        return
    for unit in sorted((ROOT / "deploy" / "systemd").glob("*.service")):
        installed = work / unit.name
        installed.write_text(
            unit.read_text().replace("/opt/identity/venv/bin/", f"{bin_dir}/")
        )
        step(f"verify {unit.name}", ["systemd-analyze", "verify", str(installed)], work,
             dict(os.environ))


def installed_environment(bin_dir: Path, database_url: str, port: int) -> dict:
    """The installed command's environment: no path into the checkout."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("PYTHONPATH", "VIRTUAL_ENV") and not name.startswith("FLASK_")}
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", DATABASE_URL=database_url, HOST="127.0.0.1",
               PORT=str(port), WORKERS="1", THREADS="2", LOG_LEVEL="WARNING")
    return env


def request(url: str, body: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    try:
        outgoing = urllib.request.Request(url, data, headers)
        with urllib.request.urlopen(outgoing, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def wait_until_ready(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while request(f"{base}/readyz")[0] != 200:
        if server.poll() is not None or time.monotonic() > deadline:
            raise StepFailed(f"serve: not ready (status {server.poll()})")
        time.sleep(0.2)


def check_served(bin_dir: Path, elsewhere: Path, env: dict, port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    print(f"test-package: serve: identity serve on {base}", flush=True)
    server = subprocess.Popen([str(bin_dir / "identity"), "serve"], cwd=elsewhere, env=env)
    try:
        wait_until_ready(base, server)
        status, body = request(f"{base}/identify", {"email": "lorraine@hillvalley.edu",
                                                     "phoneNumber": "123456"})
        if status != 200 or "lorraine@hillvalley.edu" not in body:
            raise StepFailed(f"identify: {status} {body}")
        _, metrics = request(f"{base}/metrics")
        printed = step("version", [str(bin_dir / "identity"), "version"], elsewhere, env)
        version = printed.split()[-1]
        if f'identity_build_info{{version="{version}"}} 1.0' not in metrics:
            raise StepFailed(f"metrics: no identity_build_info for {version}")
    finally:
        server.send_signal(signal.SIGTERM)
        status = server.wait(60)
    if status != 0:
        raise StepFailed(f"serve: stopped with status {status} after SIGTERM")


def check_installed_alone(bin_dir: Path, elsewhere: Path, env: dict) -> None:
    python = str(bin_dir / "python")
    where = step("import path", [python, "-c", "import identity; print(identity.__file__)"],
                 elsewhere, env).strip()
    if not where.startswith(str(bin_dir.parent)) or where.startswith(str(ROOT)):
        raise StepFailed(f"identity imported from {where}, not from the installed package")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="identity-package-") as folder:
        work = Path(folder)
        elsewhere = work / "elsewhere"
        elsewhere.mkdir()
        try:
            bin_dir = build_and_install(work)
            check_service_units(bin_dir, work)
            with EmbeddedPostgres(durable=False) as database:
                port = free_port()
                env = installed_environment(bin_dir, database.url, port)
                identity = str(bin_dir / "identity")
                check_installed_alone(bin_dir, elsewhere, env)
                step("init-db", [identity, "init-db"], elsewhere, env,
                     expect="applied 001_contact.sql")
                check_served(bin_dir, elsewhere, env, port)
                (elsewhere / "orders.csv").write_text(ORDERS)
                # Status 1: the one bad order is rejected, the two others imported.
                step("import", [identity, "import", "orders.csv"], elsewhere, env,
                     expect="rejected              1 orders", status=1)
                step("audit", [identity, "audit"], elsewhere, env, expect="no violations")
        except StepFailed as failure:
            print(f"test-package: FAILED at {failure}", file=sys.stderr)
            return 1
    print(f"test-package: {DISTRIBUTION} installed from its wheel works outside the checkout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
