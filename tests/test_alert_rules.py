"""The alert rules and the Grafana dashboard in deploy/: promtool's checks and unit tests
pass, and every metric they name is one a running service's /metrics exposes.

promtool comes with Debian's prometheus package (`make system-deps` installs it), or
from PROMTOOL; without it these tests fail, saying so, never skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.service_process import ServiceProcess, serving

pytestmark = pytest.mark.integration  # promtool, and a running `otpgate serve`

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "otpgate.rules.yml"
RULES_TESTS = DEPLOY / "prometheus" / "otpgate.rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "otpgate.json"
OPERATING = DEPLOY.parent / "docs" / "operating.md"

# PromQL words that are not metric names: operators, modifiers, literals.
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "atan2", "inf", "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:])(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: not its functions, keywords, label
    names or values, durations, numbers or Grafana variables."""
    expr = _STRING.sub('""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, subqueries, $__rate_interval
    expr = _GROUPING.sub("", expr)
    return {
        name
        for name, call in _IDENTIFIER.findall(expr)
        if not call and name.lower() not in _KEYWORDS
    }


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in dashboard["panels"]:
        exprs += [target["expr"] for target in panel.get("targets", ())]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(<metric>, <label>): the metric is all it names.
            exprs.append(re.sub(r"label_values\((\w+),.*\)", r"\1", variable["definition"]))
    return exprs


def promtool() -> str:
    named = os.environ.get("PROMTOOL")
    found = (
        shutil.which(named)
        if named
        else shutil.which("promtool") or shutil.which("/usr/bin/promtool")
    )
    if found is None:
        pytest.fail(
            f"promtool is not installed{f' at PROMTOOL={named}' if named else ''}; the alert"
            " rules' checks need it. `make system-deps` installs it (apt-get install"
            " prometheus), or point PROMTOOL at one.",
            pytrace=False,
        )
    return found


@pytest.mark.parametrize("command", [("check", "rules", RULES), ("test", "rules", RULES_TESTS)])
def test_promtool_passes_the_rules(command: tuple[str, str, Path]) -> None:
    result = subprocess.run(
        [promtool(), *map(str, command)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_wait_a_severity_its_words_and_a_runbook() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = [rule for group in groups for rule in group["rules"]]
    assert len(alerts) >= 10
    for rule in alerts:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        # Its runbook: a section of docs/operating.md under the alert's name.
        assert rule["annotations"]["runbook"] == f"docs/operating.md#{rule['alert'].lower()}"
        assert f"\n### {rule['alert']}\n" in OPERATING.read_text(), rule["alert"]


def test_metric_names_are_read_from_an_expression() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route=~"/api/.+",'
        ' instance=~"$instance"}[$__rate_interval]))) > 1 and on() sum without (x)'
        " (increase(b_total[1h] offset 5m)) / ignoring(y) c > bool 0.5"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with serving(tmp_path_factory.mktemp("alerts")) as process:
        yield process


def exposed(server: ServiceProcess) -> set[str]:
    """The sample names of a scrape, after requests that make every labelled series."""
    phone = "+12125550188"
    assert server.post("/api/v1/request-otp", {"phoneNumber": phone}).status_code == 200
    refused = server.post("/api/v1/request-otp", {"phoneNumber": phone})
    assert refused.json()["code"] == "resend_cooldown"  # a limit refusal
    wrong = server.post("/api/v1/verify-otp", {"phoneNumber": phone, "otp": "000000"})
    assert wrong.status_code == 400  # a verification
    text = httpx.get(f"{server.base}/metrics", timeout=10).text
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_rules_and_dashboard_name_only_metrics_the_service_exposes(
    server: ServiceProcess,
) -> None:
    names = exposed(server)
    used = {
        source: set().union(*map(metric_names, exprs))
        for source, exprs in (
            (RULES.name, rule_expressions()),
            (DASHBOARD.name, dashboard_expressions()),
        )
    }
    for source, metrics in used.items():
        assert metrics, source
        assert not metrics - names, f"{source} names metrics /metrics lacks: {metrics - names}"
