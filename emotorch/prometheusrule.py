"""Render the Kubernetes PrometheusRule of deploy/k8s from monitoring/rules, the one source of the rules.

Prometheus Operator reads rules from PrometheusRule objects (`spec.groups`), which kustomize cannot build from
plain rule files (a configMapGenerator makes ConfigMaps only). So the object is generated from the rule files
that monitoring/prometheus.yml loads, in that order: `python -m emotorch.prometheusrule` rewrites
deploy/k8s/base/prometheusrule.yaml and `--check` exits 1 when it is stale. tests/deploy checks both that the
file is fresh and that the groups every overlay renders equal the rule files' groups, so they cannot drift.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from emotorch.logs import configure_logging
from emotorch.monitoring import MONITORING_DIR

logger = logging.getLogger(__name__)

OUTPUT = MONITORING_DIR.parent / "deploy" / "k8s" / "base" / "prometheusrule.yaml"
RULE_NAME = "emotorch"
HEADER = (
    "# GENERATED from monitoring/rules by `python -m emotorch.prometheusrule`: do not edit, edit the rule files.\n"
    "# Prometheus Operator selects this object through its ruleSelector (match these labels there).\n"
)


def rule_groups(monitoring_dir: Path = MONITORING_DIR) -> list[dict[str, Any]]:
    """The rule groups of every rule file that monitoring/prometheus.yml loads, in its order."""
    config = yaml.safe_load((monitoring_dir / "prometheus.yml").read_text(encoding="utf-8"))
    groups: list[dict[str, Any]] = []
    for name in config["rule_files"]:
        groups += yaml.safe_load((monitoring_dir / name).read_text(encoding="utf-8"))["groups"]
    return groups


def prometheus_rule(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """A monitoring.coreos.com/v1 PrometheusRule holding these groups unchanged."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": RULE_NAME, "labels": {"app.kubernetes.io/name": RULE_NAME}},
        "spec": {"groups": groups},
    }


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL expressions) as literal blocks, so the file reads like the rule files."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_BlockDumper.add_representer(str, _represent_str)


def render(monitoring_dir: Path = MONITORING_DIR) -> str:
    """The text of deploy/k8s/base/prometheusrule.yaml."""
    body = yaml.dump(
        prometheus_rule(rule_groups(monitoring_dir)),
        Dumper=_BlockDumper,
        sort_keys=False,
        width=1000,
        allow_unicode=True,
    )
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help="file to write (default %(default)s)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file is stale")
    args = parser.parse_args(argv)
    configure_logging()

    text = render()
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
    if args.check:
        if current != text:
            logger.error("%s is stale: run python -m emotorch.prometheusrule", args.output)
            return 1
        return 0
    if current != text:
        args.output.write_text(text, encoding="utf-8")
        logger.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
