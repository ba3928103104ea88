"""deploy/compose.yaml against the Compose Specification's JSON schema, and its Prometheus and Grafana wiring
against monitoring/ (the rule files themselves are checked by promtool in tests/monitoring)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema

from emotorch.monitoring import MONITORING_DIR
from tests.deploy.conftest import (
    COMPOSE_FILES,
    DEPLOY,
    DOCKERFILES,
    dockerfile_instructions,
    example_env,
    exec_form,
    load_compose,
    variables,
)

# The Compose Specification's schema as vendored (with its licence and checksum) by check-jsonschema.
COMPOSE_SCHEMA = get_builtin_schema("vendor.compose-spec")
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.validators.validator_for(COMPOSE_SCHEMA)(COMPOSE_SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_files_follow_the_compose_specification(path: Path) -> None:
    assert schema_errors(load_compose(path)) == []  # as written, ${...} included
    assert schema_errors(load_compose(path, example_env())) == []  # as Compose reads it with .env.example


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        (("services", "gateway"), "healthchek", {"test": ["CMD", "true"]}),  # misspelt key
        (("services", "triton"), "ports", "8000:8000"),  # a string where a list belongs
        (("services", "triton", "deploy", "resources", "limits"), "gpus", 1),  # not a Compose field
    ],
)
def test_the_schema_check_rejects_a_broken_file(where: tuple[str, ...], key: str, value: object) -> None:
    document = copy.deepcopy(load_compose(COMPOSE_FILES[0], example_env()))
    node = document
    for part in where:
        node = node[part]
    node[key] = value
    assert schema_errors(document)


def test_compose_refuses_to_start_without_each_secret() -> None:
    required = {v.name for path in COMPOSE_FILES for v in variables(load_compose(path)) if v.is_required}
    assert {"FEEDBACK_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "MINIO_ROOT_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= required
    for name in sorted(required):
        env = example_env()
        env[name] = ""
        with pytest.raises(KeyError, match=name):
            load_compose(COMPOSE_FILES[0], env)


def test_long_running_services_have_healthchecks_and_dependencies_wait_for_them(compose: dict[str, Any]) -> None:
    services = compose["services"]
    image_healthchecks = {
        f"deploy/{path.name}"
        for path in DOCKERFILES
        if any(i.keyword == "HEALTHCHECK" for i in dockerfile_instructions(path))
    }
    for name, service in services.items():
        if service.get("restart") == "no":
            continue  # a one-shot job
        has_check = "healthcheck" in service or service.get("build", {}).get("dockerfile") in image_healthchecks
        assert has_check, f"{name} has no healthcheck (in compose or in its Dockerfile)"
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}, which has no healthcheck"
            if rule["condition"] == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{dependency} is not a one-shot job"


def _mount(service: dict[str, Any], target: str) -> str:
    """The host source of the bind mount at `target` (relative to deploy/)."""
    for volume in service["volumes"]:
        if isinstance(volume, dict) and volume["target"] == target:
            return str(volume["source"])
    raise AssertionError(f"nothing is mounted at {target}")


def test_compose_prometheus_loads_the_same_rules_and_jobs_as_monitoring(compose: dict[str, Any]) -> None:
    ours = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    local = yaml.safe_load((MONITORING_DIR / "prometheus.yml").read_text())
    assert ours["rule_files"] == local["rule_files"]
    assert [j["job_name"] for j in ours["scrape_configs"]] == [j["job_name"] for j in local["scrape_configs"]]
    assert [j["metrics_path"] for j in ours["scrape_configs"]] == [j["metrics_path"] for j in local["scrape_configs"]]

    prometheus = compose["services"]["prometheus"]
    config_target = next(a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file="))
    assert (DEPLOY / _mount(prometheus, config_target)).resolve() == PROMETHEUS_CONFIG
    # rule_files are relative to the config file: monitoring/rules must be mounted at <config dir>/rules.
    rules_dirs = {Path(name).parent for name in ours["rule_files"]}
    for rules_dir in rules_dirs:
        target = str(Path(config_target).parent / rules_dir)
        assert (DEPLOY / _mount(prometheus, target)).resolve() == (MONITORING_DIR / rules_dir).resolve()


def test_compose_prometheus_scrapes_the_compose_services(compose: dict[str, Any]) -> None:
    jobs = {j["job_name"]: j for j in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    triton_command = compose["services"]["triton"]["command"]
    metrics_port = next(int(a.split("=")[1]) for a in triton_command if a.startswith("--metrics-port="))
    assert jobs["triton"]["static_configs"] == [{"targets": [f"triton:{metrics_port}"]}]
    gateway_port = int(exec_form(_instruction("gateway.Dockerfile", "EXPOSE"))[0])
    assert jobs["gateway"]["dns_sd_configs"][0]["names"] == ["gateway"]
    assert jobs["gateway"]["dns_sd_configs"][0]["port"] == gateway_port


def _instruction(dockerfile: str, keyword: str) -> str:
    found = [i.args for i in dockerfile_instructions(DEPLOY / dockerfile) if i.keyword == keyword]
    assert found, f"{dockerfile} has no {keyword}"
    return found[-1]


def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: `make test` installs Debian's prometheus package (as root)"
    shutil.copy(PROMETHEUS_CONFIG, tmp_path / "prometheus.yml")
    (tmp_path / "rules").symlink_to(MONITORING_DIR / "rules")  # what the compose bind mount does
    result = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout + result.stderr


def test_compose_grafana_mounts_what_the_provisioning_files_expect(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    provisioning = MONITORING_DIR / "grafana" / "provisioning"
    assert (DEPLOY / _mount(grafana, "/etc/grafana/provisioning")).resolve() == provisioning
    provider = yaml.safe_load((provisioning / "dashboards" / "emotorch.yml").read_text())["providers"][0]
    dashboards = (DEPLOY / _mount(grafana, provider["options"]["path"])).resolve()
    assert dashboards == MONITORING_DIR / "grafana" / "dashboards" and list(dashboards.glob("*.json"))
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "${PROMETHEUS_URL}"
    prometheus_port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert grafana["environment"]["PROMETHEUS_URL"] == f"http://prometheus:{prometheus_port}"
