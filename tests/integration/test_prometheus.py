"""deploy/prometheus and deploy/grafana against a real Prometheus (Debian's
package) scraping a running Orion: promtool accepts the config and the rules, and
every alert figure and every dashboard query returns series from Orion's own
output (issue 11)."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.integration.test_metrics import place_over_http
from tests.support.factories import customer, eventually, product, wait_for
from tests.support.processes import web_server
from tests.support.prometheus import figures, missing, prometheus, query
from worker import app as celery_app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "orion.yml"
# Grafana's own variables, as Grafana would fill them for a 1 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "5m"}


def shipped_config(tmp: Path, token: str) -> dict:
    """deploy/prometheus/prometheus.yml with its compose-only paths made local: the
    rules glob through the compose mount, the credentials file in ``tmp``."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["prometheus"]
    mounts = {target: source for source, target, *_ in (v.split(":") for v in compose["volumes"])}
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [
        next(
            str(ROOT / mounts[target] / pattern[len(target) + 1 :])
            for target in mounts
            if pattern.startswith(target + "/")
        )
        for pattern in config["rule_files"]
    ]
    (tmp / "metrics-token").write_text(token)
    for job in config["scrape_configs"]:
        job["authorization"]["credentials_file"] = str(tmp / "metrics-token")
    return config


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "orion.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for name, value in GRAFANA_VARIABLES.items():
        exprs = [expr.replace(name, value) for expr in exprs]
    assert exprs and not [expr for expr in exprs if "$" in expr], "a variable the test does not fill"
    return exprs


def promtool(*args: str) -> subprocess.CompletedProcess:
    assert shutil.which("promtool"), "needs Debian's prometheus package (./run.sh test installs it)"
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_config_and_the_rules(tmp_path):
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(shipped_config(tmp_path, "a-token")))
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0 and f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


def test_every_alert_waits_has_a_severity_a_summary_and_a_runbook_section():
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in (ROOT / "docs" / "operations.md").read_text().splitlines()
        if line.startswith("#")
    }
    for rule in alert_rules():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule["alert"]
        page, anchor = rule["annotations"]["runbook_url"].split("#")
        assert (page, anchor) == ("docs/operations.md", rule["alert"].lower()), rule["alert"]
        assert anchor in anchors, f"docs/operations.md has no section {rule['alert']}"


def non_loopback_address() -> str:
    """An IPv4 address of this machine that is not a loopback one."""
    import psutil

    found = [
        address.address
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
        if address.family == socket.AF_INET and not address.address.startswith("127.")
    ]
    assert found, "needs a network interface besides loopback, for a scrape that needs the token"
    return found[0]


@pytest.fixture(scope="module")
def orion(worker):
    """A running Orion: the web on every address, with a metrics token, and a worker."""
    token = secrets.token_urlsafe(16)
    with web_server({"WEB_HOST": "0.0.0.0", "METRICS_TOKEN": token}) as base:
        yield base, token


@pytest.fixture(scope="module")
def scraping(orion, tmp_path_factory):
    """Prometheus scraping that Orion every second over a non-loopback address
    (so only the token lets it in), rules evaluated every second, while orders
    complete (one after retries), are declined and fail, and the inventory audit
    runs; yields its URL once it has scraped the outcome."""
    base, token = orion
    tmp = tmp_path_factory.mktemp("prometheus")
    target = f"{non_loopback_address()}:{base.rsplit(':', 1)[1]}"
    assert requests.get(f"http://{target}/metrics", timeout=10).status_code == 401
    config = shipped_config(tmp, token)
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    with prometheus(tmp / "prometheus.yml", tmp / "data") as prom:
        eventually(lambda: query(prom, 'sum_over_time(up{job="orion"}[1m]) >= 3'), timeout=30, interval=0.5)
        place_orders(base)
        eventually(
            lambda: query(prom, 'sum(delta(orion_orders{status="failed"}[1m])) > 0'), timeout=30, interval=0.5
        )
        time.sleep(3)  # a few more scrapes and rule evaluations
        yield prom


def place_orders(base: str) -> None:
    uid = secrets.token_hex(4)
    user, sku = customer(uid), product(uid, on_hand=20)
    orders = [
        place_over_http(base, user, sku, card)
        for card in ("tok_visa", "tok_flaky", "tok_chargeDeclined", "tok_processingError")
    ]
    assert [wait_for(order_id).status for order_id in orders] == [
        "completed",
        "completed",
        "cancelled",
        "failed",
    ]
    celery_app.send_task("scheduled.audit_inventory", ignore_result=False).get(timeout=60)


def test_prometheus_loads_every_rule_and_evaluates_it_without_error(scraping):
    rules = [
        rule
        for group in requests.get(f"{scraping}/api/v1/rules", timeout=10).json()["data"]["groups"]
        for rule in group["rules"]
    ]
    assert sorted(rule["name"] for rule in rules) == sorted(rule["alert"] for rule in alert_rules())
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]


def test_every_alert_figure_returns_series_from_orion(scraping):
    """Each rule's expression without its threshold: the alerts are not firing."""
    checked = [
        (rule["alert"], figure, empty) for rule in alert_rules() for figure, empty in figures(rule["expr"])
    ]
    problems = [(alert, missing(scraping, figure, empty)) for alert, figure, empty in checked]
    assert [problem for problem in problems if problem[1]] == []
    assert len(checked) > len(alert_rules()), "the and/or rules were split"


def test_every_dashboard_query_returns_series_from_orion(scraping):
    problems = [missing(scraping, expr) for expr in dashboard_queries()]
    assert [problem for problem in problems if problem] == []


def test_the_figures_see_what_happened_while_prometheus_scraped(scraping):
    """Not only series: the failed order, the retries and the step timings show."""
    [failed] = query(scraping, 'sum(delta(orion_orders{status="failed"}[5m]))')
    assert float(failed["value"][1]) > 0
    retries = query(scraping, "sum by (task) (rate(orion_task_retries_total[5m]))")
    assert {"saga.authorize_payment"} <= {r["metric"]["task"] for r in retries if float(r["value"][1]) > 0}
    p95 = query(
        scraping,
        "histogram_quantile(0.95, sum by (le, step) (rate(orion_saga_step_duration_seconds_bucket[5m])))",
    )
    assert any(r["metric"]["step"] == "saga.complete_order" and float(r["value"][1]) > 0 for r in p95)


def test_the_checker_reports_a_misspelt_metric(scraping):
    """It bites: a name Orion does not export gives no series, in a dashboard query
    or in an alert figure, and absent() of it is not empty."""
    assert missing(scraping, "sum by (step) (rate(orion_saga_step_duraton_seconds_count[1m]))")
    [(figure, empty)] = figures("max(orion_saga_stuck) > 0")
    assert figure == "max(orion_saga_stuck)" and missing(scraping, figure, empty)
    [_, (figure, empty)] = figures('up{job="orion"} == 0 or absent(orion_queue_mesages)')
    assert missing(scraping, figure, empty)
    assert missing(scraping, "max(orion_sagas_stuck)") is None
