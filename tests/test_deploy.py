"""The operations pack in deploy/: every metric the dashboard and the alert rules use is one
a live server exposes; the rules pass their unit tests (promtool) and the service units
pass systemd's own check. `make test-deploy` runs this file with both tools installed."""

import json
import re
import shutil
import subprocess
import urllib.request

import pytest
from prometheus_client import generate_latest
from servers import ServerProcess

from identity.config import PROJECT_ROOT, version
from identity.web.metrics import Metrics

DEPLOY = PROJECT_ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "identity-dashboard.json"
RULES = DEPLOY / "prometheus" / "identity-alerts.yml"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
INSTALLED_COMMAND = "/opt/identity/venv/bin/identity"
# What an exposed family's samples are called besides its own name.
_SAMPLE_SUFFIXES = ("", "_total", "_created", "_bucket", "_count", "_sum")


def _queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def _metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bidentity_[a-z_]+\b", text))


def _sample_names(exposition: str) -> set[str]:
    families = re.findall(r"^# TYPE (\S+) ", exposition, re.MULTILINE)
    return {family + suffix for family in families for suffix in _SAMPLE_SUFFIXES}


def _post(url: str, body: dict) -> None:
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    urllib.request.urlopen(request, timeout=30).close()


@pytest.fixture(scope="module")
def exposed(database_url) -> tuple[set[str], str]:
    """The sample names a live server's /metrics exposes, and its text, after checkouts
    that make a suspected hub. Workers write a labelled counter's file at its first
    event only (retries, refusals): those count as exposed when the service declares them."""
    with ServerProcess(database_url, WORKERS=1, THREADS=2, HUB_MAX_PARTNERS=1) as server:
        for phone in ("555-0101", "555-0102"):
            body = {"email": "deploy-hub@example.org", "phoneNumber": phone}
            _post(f"{server.url}/identify", body)
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as answer:
            text = answer.read().decode()
    declared = generate_latest(Metrics(pool_size=1).registry).decode()
    return _sample_names(text) | _sample_names(declared), text


def test_every_dashboard_query_uses_an_exposed_metric(exposed):
    names = _metric_names(" ".join(_queries()))
    assert len(names) >= 10
    assert names <= exposed[0], sorted(names - exposed[0])


def test_every_alert_rule_uses_an_exposed_metric(exposed):
    names = _metric_names(RULES.read_text())
    assert len(names) >= 6
    assert names <= exposed[0], sorted(names - exposed[0])


def test_the_release_and_a_suspected_hub_are_in_the_live_metrics(exposed):
    assert f'identity_build_info{{version="{version()}"}} 1.0' in exposed[1]
    assert "identity_hubs_suspected_total{" in exposed[1]


@pytest.mark.skipif(not shutil.which("promtool"), reason="needs promtool (Debian's prometheus)")
def test_the_alert_rules_pass_their_unit_tests():
    result = subprocess.run(
        ["promtool", "test", "rules", "identity-alerts.test.yml"],
        cwd=RULES.parent, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze (systemd)")
@pytest.mark.parametrize("unit", UNITS, ids=lambda path: path.name)
def test_the_service_units_pass_systemds_check(unit, tmp_path):
    """Checked as installed: the command the unit names exists (here, this checkout's)."""
    command = shutil.which("identity", path=str(PROJECT_ROOT / ".venv" / "bin"))
    assert command, "the development environment has no identity command"
    checked = tmp_path / unit.name
    checked.write_text(unit.read_text().replace(INSTALLED_COMMAND, command))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(checked)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert INSTALLED_COMMAND in unit.read_text()
