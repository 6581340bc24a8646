"""Settings are checked before any worker starts: a bad value, a busy port or a Ctrl-C ends
the start cleanly, with one line and a status a script can rely on."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from identity import config, create_app
from identity.config import PROJECT_ROOT, ConfigError
from identity.dev.embedded import free_port

READY_TIMEOUT_S = 60
REPORTED = [("HUB_ACTION", "blok"), ("BLOCKLIST", "strict"), ("SESSION_COOKIE_SECURE", "maybe")]


@pytest.mark.parametrize(
    "name, value",
    [*REPORTED, ("PORT", "http"), ("WORKERS", "0"), ("LOG_LEVEL", "loud"),
     ("TRUSTED_PROXY_HEADERS", "x-real-ip"), ("REQUEST_DEADLINE_S", "soon"),
     ("PHONE_REGION", "XX")],
)
def test_a_bad_value_is_named_with_what_is_allowed(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        config.from_environment()
    message = str(raised.value)
    assert message.startswith(f"{name}={value!r} is not allowed: ") and "\n" not in message


@pytest.mark.parametrize("spelling", ["True", "true", "TRUE", "1", "yes", "On"])
def test_a_boolean_is_true_in_any_usual_spelling(monkeypatch, spelling):
    monkeypatch.setenv("SESSION_COOKIE_SECURE", spelling)
    assert create_app().config["SESSION_COOKIE_SECURE"] is True


@pytest.mark.parametrize("spelling", ["False", "0", "no", "OFF", ""])
def test_a_boolean_is_false_in_any_usual_spelling(monkeypatch, spelling):
    monkeypatch.setenv("SESSION_COOKIE_SECURE", spelling)
    assert config.from_environment()["SESSION_COOKIE_SECURE"] is False


def test_choices_match_in_any_case(monkeypatch):
    monkeypatch.setenv("HUB_ACTION", "Block")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = config.from_environment()
    assert (settings["HUB_ACTION"], settings["LOG_LEVEL"]) == ("block", "DEBUG")


def test_a_blocklist_file_is_accepted_when_it_loads(monkeypatch, tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"emails": {"exact": ["test@example.com"]}}')
    bad.write_text('{"emails": {"patterns": ["("]}}')
    monkeypatch.setenv("BLOCKLIST", str(good))
    assert config.from_environment()["BLOCKLIST"] == str(good)
    monkeypatch.setenv("BLOCKLIST", str(bad))
    with pytest.raises(ConfigError, match="BLOCKLIST="):
        config.from_environment()


def test_the_migrations_are_found_inside_the_package():
    schema_dir = config.from_environment()["SCHEMA_DIR"]
    assert schema_dir.is_relative_to(PROJECT_ROOT / "identity")
    assert sorted(path.name for path in schema_dir.glob("*.sql")) == sorted(
        path.name for path in (PROJECT_ROOT / "sql").glob("*.sql")
    )


def _environment(**settings) -> dict:
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(free_port()), "WORKERS": "1",
           "THREADS": "2", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    env.update(settings)
    return env


def _serve(env: dict) -> subprocess.Popen:
    """`python wsgi.py` in a session of its own, as a terminal's foreground job would be."""
    return subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "wsgi.py")], cwd=PROJECT_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


@pytest.mark.parametrize("name, value", REPORTED)
def test_a_bad_setting_stops_the_start_before_any_worker(name, value):
    server = _serve(_environment(**{name: value}))
    _, errors = server.communicate(timeout=60)
    assert server.returncode == 2
    (line,) = errors.splitlines()  # one line, and no worker's log
    assert line.startswith(f"identity: {name}={value!r} is not allowed: ")


def test_a_busy_port_is_one_line_and_status_2():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = _serve(_environment(PORT=str(port)))
        _, errors = server.communicate(timeout=60)
    assert server.returncode == 2
    assert errors.splitlines() == [f"identity: port {port} is busy: another program listens "
                                   f"on 127.0.0.1:{port} (set PORT)"]


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
            return True
    except OSError:
        return False


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("moment", ["while starting", "while serving"])
def test_ctrl_c_ends_with_status_0_and_no_traceback(moment):
    env = _environment(WORKERS="2")
    server = _serve(env)
    if moment == "while serving":
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _answers(int(env["PORT"])) and time.monotonic() < deadline:
            assert server.poll() is None
            time.sleep(0.1)
    else:
        # Once the port is open: the workers are being started (they import for a while).
        while not _listening(int(env["PORT"])):
            assert server.poll() is None
            time.sleep(0.01)
    os.killpg(server.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
    _, errors = server.communicate(timeout=90)
    assert server.returncode == 0, errors
    assert "Traceback" not in errors and "KeyboardInterrupt" not in errors


def test_make_run_with_a_bad_setting_stops_before_the_database(tmp_path):
    """`make run` checks the settings before it starts the embedded PostgreSQL."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed-stamp", "run",
         f"PGDATA_DIR={tmp_path / 'pgdata'}"],
        cwd=PROJECT_ROOT, env={**os.environ, "HUB_ACTION": "blok"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    naming = [line for line in result.stderr.splitlines() if "HUB_ACTION" in line]
    assert naming == ["identity: HUB_ACTION='blok' is not allowed: one of alert, block"]
    assert not (tmp_path / "pgdata").exists()


def _cli(*args: str, **settings: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "identity.cli", *args], cwd=PROJECT_ROOT,
        env={**os.environ, **settings}, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("command", ["init-db", "audit", "check-config"])
def test_every_command_stops_at_a_bad_setting_with_one_line(command):
    result = _cli(command, BLOCKLIST="strict", DATABASE_URL="postgresql://127.0.0.1:1/none")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("identity: BLOCKLIST='strict' is not allowed: ")


def test_the_command_names_the_release():
    result = _cli("version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"{config.DISTRIBUTION} {config.version()}"
