"""deploy/k8s rendered by the real kustomize and validated against Kubernetes' JSON schemas (kubernetes-validate,
strict: unknown fields fail) and the Prometheus Operator CRD schemas in schemas/; then what a schema cannot see:
selectors, ports, probes, resources, secrets, and the PrometheusRule being exactly monitoring/rules."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from emotorch import prometheusrule
from emotorch.monitoring import MONITORING_DIR
from tests.deploy.conftest import (
    DEPLOY,
    KUSTOMIZATIONS,
    OVERLAYS,
    SCHEMAS,
    Docs,
    containers,
    find,
    image_uid,
    render_kustomization,
)

# The oldest Kubernetes minor the manifests target and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): SCHEMAS / "prometheusrule-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor-monitoring-v1.json",
}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate(doc: dict[str, Any], version: str) -> None:
    """Raise if `doc` does not conform to its kind's schema (jsonschema.ValidationError or a subclass)."""
    schema_path = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if schema_path is None:
        kubernetes_validate.validate(doc, version, strict=True)  # SchemaNotFoundError for an unknown kind
        return
    jsonschema.Draft202012Validator(json.loads(schema_path.read_text())).validate(doc)
    name = doc["metadata"]["name"]
    if not (len(name) <= 253 and _DNS_SUBDOMAIN.match(name)):
        raise jsonschema.ValidationError(f"metadata.name {name!r} is not a DNS subdomain")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_rendered_object_matches_its_schema(rendered: Docs, name: str, version: str) -> None:
    for doc in rendered[name]:
        validate(doc, version)


@pytest.mark.parametrize(
    ("kind", "name", "path", "value"),
    [
        ("Deployment", "triton", ("spec", "template", "spec", "containers", 0, "readinessProbes"), {}),
        ("Deployment", "gateway", ("spec", "template", "spec", "containers", 0, "ports", 0, "containerPort"), "http"),
        ("HorizontalPodAutoscaler", "gateway", ("spec", "minReplicas"), "two"),
        ("PrometheusRule", "emotorch", ("spec", "groups", 0, "rules", 0, "for_"), "5m"),
        ("ServiceMonitor", "gateway", ("spec", "endpoints", 0, "interval"), "15 seconds"),
    ],
)
def test_validation_rejects_broken_objects(
    rendered: Docs, kind: str, name: str, path: tuple[str | int, ...], value: object
) -> None:
    doc = copy.deepcopy(find(rendered["overlays/gpu"], kind, name))
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(doc, KUBERNETES_VERSIONS[0])


@pytest.mark.parametrize(("target", "is_valid"), [("triton", True), ("trition", False)])
def test_kustomize_fails_on_a_patch_of_a_missing_object(tmp_path: Path, target: str, is_valid: bool) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    patch = f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {target}}}\nspec: {{replicas: 3}}\n"
    base = os.path.relpath(DEPLOY / "k8s" / "base", overlay)  # kustomize refuses absolute paths
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({"resources": [base], "patches": [{"patch": patch}]}))
    if is_valid:
        assert find(render_kustomization(str(overlay)), "Deployment", "triton")["spec"]["replicas"] == 3
    else:
        with pytest.raises(AssertionError, match="no resource matches"):
            render_kustomization(str(overlay))


# The PrometheusRule: the rules of monitoring/rules, not a second copy that can drift.


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_prometheusrule_groups_are_exactly_the_monitoring_rule_files(rendered: Docs, name: str) -> None:
    rule = find(rendered[name], "PrometheusRule", prometheusrule.RULE_NAME)
    expected = []
    for rule_file in yaml.safe_load((MONITORING_DIR / "prometheus.yml").read_text())["rule_files"]:
        expected += yaml.safe_load((MONITORING_DIR / rule_file).read_text())["groups"]
    assert rule["spec"]["groups"] == expected
    names = [g["name"] for g in expected]
    assert len(names) == len(set(names)), "group names must be unique across rule files (a list-map in the CRD)"


def test_prometheusrule_file_is_regenerated_from_the_rules(tmp_path: Path) -> None:
    assert prometheusrule.OUTPUT.read_text() == prometheusrule.render(), "run python -m emotorch.prometheusrule"
    assert prometheusrule.main(["--check"]) == 0
    stale = tmp_path / "prometheusrule.yaml"
    stale.write_text(prometheusrule.render().replace("for: 10m", "for: 1h", 1))
    assert prometheusrule.main(["--check", "--output", str(stale)]) == 1
    assert prometheusrule.main(["--output", str(stale)]) == 0
    assert stale.read_text() == prometheusrule.render()


def test_prometheusrule_follows_an_edit_of_the_rule_files(tmp_path: Path) -> None:
    monitoring = tmp_path / "monitoring"
    (monitoring / "rules").mkdir(parents=True)
    (monitoring / "prometheus.yml").write_text("rule_files: [rules/a.yml]\n")
    (monitoring / "rules" / "a.yml").write_text("groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n")
    assert yaml.safe_load(prometheusrule.render(monitoring))["spec"]["groups"] == [
        {"name": "g", "rules": [{"record": "r", "expr": "up"}]}
    ]


# What a schema cannot see.


def _pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    return dict(doc["spec"]["template"]["metadata"]["labels"])


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_container_has_resource_requests_and_limits(rendered: Docs, name: str) -> None:
    for workload in _workloads(rendered[name]):
        for container in containers(workload):
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), (
                    f"{workload['metadata']['name']}/{container['name']} lacks {bound}"
                )
            assert _quantity(resources["limits"]["memory"]) >= _quantity(resources["requests"]["memory"])
            assert _quantity(resources["limits"]["cpu"]) >= _quantity(resources["requests"]["cpu"])


def _quantity(value: str | int) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, f"not a quantity: {value}"
    return float(match.group(1)) * units.get(match.group(2), 1.0)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_triton_probes_and_model_repository_on_s3(rendered: Docs, name: str) -> None:
    triton = find(rendered[name], "Deployment", "triton")
    (container,) = containers(triton)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = container["args"]
    assert f"--http-port={ports['http']}" in args
    for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
        assert container[probe]["httpGet"]["path"] == path
        assert ports[container[probe]["httpGet"]["port"]] == ports["http"]
    assert "--model-control-mode=explicit" in args and "--load-model=emotion" in args
    env = {e["name"]: e for e in container["env"]}
    assert "--model-repository=$(MODEL_REPOSITORY)" in args
    assert env["MODEL_REPOSITORY"]["value"].startswith("s3://")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "secretKeyRef" in env[key]["valueFrom"], f"{key} must come from a Secret"


def test_only_the_gpu_overlay_requests_gpus(rendered: Docs) -> None:
    for name in KUSTOMIZATIONS:
        (container,) = containers(find(rendered[name], "Deployment", "triton"))
        gpus = {bound: container["resources"][bound].get("nvidia.com/gpu") for bound in ("requests", "limits")}
        pod = find(rendered[name], "Deployment", "triton")["spec"]["template"]["spec"]
        if name == "overlays/gpu":
            assert gpus == {"requests": "1", "limits": "1"}
            assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        else:
            assert gpus == {"requests": None, "limits": None}
    cpu_dev = containers(find(rendered["overlays/cpu-dev"], "Deployment", "triton"))[0]
    repository = {e["name"]: e.get("value") for e in cpu_dev["env"]}["MODEL_REPOSITORY"]
    assert re.fullmatch(r"s3://[a-z0-9.-]+:\d+/[a-z0-9.-]+/.+", repository), (
        "S3-compatible form: s3://host:port/bucket/path"
    )


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_gateway_runs_as_the_images_non_root_user(rendered: Docs, name: str) -> None:
    pod = find(rendered[name], "Deployment", "gateway")["spec"]["template"]["spec"]
    (container,) = containers(find(rendered[name], "Deployment", "gateway"))
    context = pod.get("securityContext", {}) | container.get("securityContext", {})
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == image_uid(DEPLOY / "gateway.Dockerfile") != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    paths = {p: container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert paths == {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_services_pdbs_and_autoscalers_point_at_real_pods_and_ports(rendered: Docs, name: str) -> None:
    docs = rendered[name]
    workloads = _workloads(docs)
    for service in (d for d in docs if d["kind"] == "Service"):
        selected = [w for w in workloads if _selects(service["spec"]["selector"], _pod_labels(w))]
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {len(selected)} workloads"
        port_names = {p["name"] for c in containers(selected[0]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, f"{service['metadata']['name']}: no container port {port}"
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(_selects(selector, _pod_labels(w)) for w in workloads), pdb["metadata"]["name"]
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        target = find(docs, hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
        assert "replicas" not in target["spec"], f"{target['metadata']['name']}: the HPA owns the replica count"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert any(h["spec"]["scaleTargetRef"]["name"] == "gateway" for h in docs if h["kind"] == "HorizontalPodAutoscaler")


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_service_monitors_give_prometheus_the_jobs_the_rules_expect(rendered: Docs, name: str) -> None:
    docs = rendered[name]
    services = [d for d in docs if d["kind"] == "Service"]
    jobs = set()
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        selected = [
            s for s in services if _selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(selected) == 1, f"ServiceMonitor {monitor['metadata']['name']} selects {len(selected)} Services"
        (service,) = selected
        port_names = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
        job_label = monitor["spec"].get("jobLabel")
        jobs.add(service["metadata"]["labels"][job_label] if job_label else service["metadata"]["name"])
    local_jobs = {
        j["job_name"] for j in yaml.safe_load((MONITORING_DIR / "prometheus.yml").read_text())["scrape_configs"]
    }
    assert jobs == local_jobs  # alerts.yml matches up{job="triton"}


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_secret_reference_is_in_the_secrets_example(rendered: Docs, name: str) -> None:
    example = {
        d["metadata"]["name"]: set(d["stringData"])
        for d in yaml.safe_load_all((DEPLOY / "k8s" / "base" / "secrets.example.yaml").read_text())
    }
    used: dict[str, set[str]] = {}
    for workload in _workloads(rendered[name]):
        for container in containers(workload):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    used.setdefault(ref["name"], set()).add(ref["key"])
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    secret = source["secretRef"]["name"]
                    assert secret in example, f"envFrom names Secret {secret}, missing from secrets.example.yaml"
                    used.setdefault(secret, set()).update(example[secret])
    assert used == example
    assert not [d for d in rendered[name] if d["kind"] == "Secret"], "secrets never live in git"


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlays_put_everything_in_their_namespace(rendered: Docs, name: str) -> None:
    docs = rendered[name]
    (namespace,) = [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"]
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, f"{doc['kind']}/{doc['metadata']['name']}"
