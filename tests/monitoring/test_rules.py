"""Prometheus configuration, rules and dashboards checked by the real promtool, and cross-checked against
the metric names the gateway defines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from emotorch.monitoring import MONITORING_DIR, render_config
from gateway.metrics import GatewayMetrics
from monitoring.grafana.dashboards import queries, render

PROMTOOL = shutil.which("promtool")


def promtool(*args: str, cwd: Path = MONITORING_DIR) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None, "promtool is missing: `make test` installs Debian's prometheus package (as root)"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_config_is_valid_as_shipped_and_as_rendered(tmp_path: Path) -> None:
    shipped = promtool("check", "config", "prometheus.yml")
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    rendered = render_config(tmp_path, ["127.0.0.1:1"], ["127.0.0.1:2"], interval_s=1)
    result = promtool("check", "config", str(rendered), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", "rules/recording.yml", "rules/alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass_and_cover_every_alert() -> None:
    result = promtool("test", "rules", "tests.yml", cwd=MONITORING_DIR / "rules")
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r["alert"] for g in yaml.safe_load((MONITORING_DIR / "rules" / "alerts.yml").read_text())["groups"]
              for r in g["rules"]}  # fmt: skip
    tests = yaml.safe_load((MONITORING_DIR / "rules" / "tests.yml").read_text())["tests"]
    firing = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t["exp_alerts"]}
    quiet = {t["alertname"] for case in tests for t in case["alert_rule_test"] if not t["exp_alerts"]}
    assert firing == alerts and quiet == alerts


def test_dashboards_are_generated_from_code_and_provisioned() -> None:
    folder = MONITORING_DIR / "grafana" / "dashboards"
    for name, text in render().items():
        assert (folder / name).read_text() == text, f"{name} is stale: run python monitoring/grafana/dashboards.py"
        dashboard = json.loads(text)
        assert dashboard["uid"].startswith("emotorch-") and dashboard["panels"]
    provider = yaml.safe_load((MONITORING_DIR / "grafana" / "provisioning" / "dashboards" / "emotorch.yml").read_text())
    assert provider["providers"][0]["type"] == "file"
    datasource = yaml.safe_load(
        (MONITORING_DIR / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["uid"] == "prometheus"


def test_rules_and_dashboards_use_only_metrics_that_exist() -> None:
    defined = {m.name for m in GatewayMetrics.create().registry.collect()}
    exposed = set()
    for name in defined:  # a histogram "x" is scraped as x_bucket/x_sum/x_count, a counter "x" as x_total
        exposed |= {name, f"{name}_total", f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_info"}
    recording = {r["record"] for g in yaml.safe_load((MONITORING_DIR / "rules" / "recording.yml").read_text())["groups"]
                 for r in g["rules"]}  # fmt: skip
    texts = [(MONITORING_DIR / "rules" / f).read_text() for f in ("recording.yml", "alerts.yml")] + queries()
    used = {m for text in texts for m in re.findall(r"\b(emotorch_[a-z_]+)", text)}
    assert used <= exposed, used - exposed
    used_records = {m for text in texts for m in re.findall(r"\b(emotorch:[a-z0-9_:]+)", text)}
    assert used_records <= recording, used_records - recording
