"""Cross-checks between deploy/compose.yaml, deploy/.env.example, the Dockerfiles, deploy/k8s and the code:
images, ports, variables, settings, secrets and paths named in one place must exist and agree in the others."""

from __future__ import annotations

import ast
import importlib.metadata
import ipaddress
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from emotorch.triton_server import TritonPorts
from gateway.settings import Settings
from tests.deploy.conftest import (
    COMPOSE_FILES,
    DEPLOY,
    DOCKERFILES,
    ENV_EXAMPLE,
    K8S,
    KUSTOMIZATIONS,
    ROOT,
    Docs,
    containers,
    dockerfile_instructions,
    example_env,
    exec_form,
    find,
    load_compose,
    read_env_file,
    variables,
)

GATEWAY_DOCKERFILE = DEPLOY / "gateway.Dockerfile"
REQUIREMENTS = DEPLOY / "requirements-gateway.txt"
PROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
_IMAGE = re.compile(
    r"^(?P<name>[a-z0-9.-]+(?::\d+)?(?:/[a-z0-9._-]+)*)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@sha256:[0-9a-f]{64})?$"
)


def _instruction_args(path: Path, keyword: str) -> list[str]:
    return [i.args for i in dockerfile_instructions(path) if i.keyword == keyword]


def all_images(compose: dict[str, Any], rendered: Docs) -> dict[str, set[str]]:
    """Every image reference, with where it appears."""
    images: dict[str, set[str]] = {}
    for name, service in compose["services"].items():
        images.setdefault(service["image"], set()).add(f"compose:{name}")
    for path in DOCKERFILES:
        for image in _instruction_args(path, "FROM"):
            images.setdefault(image.split()[0], set()).add(path.name)
    for overlay, docs in rendered.items():
        for doc in docs:
            if "template" in doc.get("spec", {}):
                for container in containers(doc):
                    images.setdefault(container["image"], set()).add(f"k8s:{overlay}/{doc['metadata']['name']}")
    return images


def test_every_image_is_pinned(compose: dict[str, Any], rendered: Docs) -> None:
    images = all_images(compose, rendered)
    assert any("tritonserver" in i for i in images) and any(i.startswith("emotorch/gateway") for i in images)
    for image, where in images.items():
        match = _IMAGE.match(image)
        assert match, f"{image} ({where}) is not an image reference (or uses a variable)"
        tag = match.group("tag")
        assert tag or "@sha256:" in image, f"{image} ({where}) has no tag: it floats"
        assert tag not in ("latest", "stable", "main"), f"{image} ({where}) uses a moving tag"
    # Same component, same image, wherever it runs.
    by_name: dict[str, set[str]] = {}
    for image in images:
        by_name.setdefault(image.rsplit(":", 1)[0], set()).add(image)
    assert all(len(tags) == 1 for tags in by_name.values()), {n: t for n, t in by_name.items() if len(t) > 1}


def test_images_built_here_are_tagged_with_the_project_version(compose: dict[str, Any], rendered: Docs) -> None:
    gateway = compose["services"]["gateway"]
    assert gateway["build"]["dockerfile"] == "deploy/gateway.Dockerfile"
    assert gateway["image"] == f"emotorch/gateway:{PROJECT_VERSION}"
    for name in KUSTOMIZATIONS:
        (container,) = containers(find(rendered[name], "Deployment", "gateway"))
        assert container["image"] == gateway["image"]
    mlflow = compose["services"]["mlflow"]
    pinned = re.search(r"mlflow==(\S+)", " ".join(_instruction_args(DEPLOY / "mlflow.Dockerfile", "RUN")))
    assert pinned and mlflow["image"] == f"emotorch/mlflow:{pinned.group(1)}"
    local = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    mlflow_spec = next(Requirement(d) for d in local if Requirement(d).name == "mlflow").specifier
    assert mlflow_spec.contains(pinned.group(1)), "the MLflow server must match the pipeline's MLflow client"


def test_compose_variables_and_env_example_agree() -> None:
    example = read_env_file(ENV_EXAMPLE)
    used = [v for path in COMPOSE_FILES for v in variables(load_compose(path))]
    assert {v.name for v in used} == set(example), "a ${VAR} missing from .env.example, or a dead entry there"
    for var in used:
        if var.is_required:
            assert example[var.name] == "", f"{var.name} is a secret: .env.example must leave it empty"
        else:
            assert var.default is not None, f"${{{var.name}}} needs a default (:-) or must be required (:?)"
            assert example[var.name] == var.default, f"{var.name}: compose default {var.default!r} != .env.example"
    secrets = {v.name for v in used if v.is_required}
    assert all(example[name] == "" for name in secrets)
    assert not {n for n, v in example.items() if v == ""} - secrets, "an empty .env.example entry that is not required"


def test_only_the_gateway_listens_on_all_interfaces(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            parts = str(port).split(":")
            if name == "gateway":
                assert len(parts) == 2, "the gateway is the public entry point"
            else:
                assert parts[0] == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def _port_of(url: str) -> int:
    port = urlsplit(url if "//" in url else f"//{url}").port
    assert port is not None, url
    return port


def _container_port(service: dict[str, Any], index: int = 0) -> int:
    return int(str(service["ports"][index]).rsplit(":", 1)[1])


def test_the_gateway_port_is_the_same_everywhere(compose: dict[str, Any], rendered: Docs) -> None:
    (expose,) = _instruction_args(GATEWAY_DOCKERFILE, "EXPOSE")
    port = int(expose)
    command = exec_form(_instruction_args(GATEWAY_DOCKERFILE, "CMD")[-1])
    assert command[command.index("--port") + 1] == str(port)
    healthcheck = _instruction_args(GATEWAY_DOCKERFILE, "HEALTHCHECK")[-1]
    assert re.search(rf"http://127\.0\.0\.1:{port}/healthz", healthcheck)
    assert _container_port(compose["services"]["gateway"]) == port
    for name in KUSTOMIZATIONS:
        (container,) = containers(find(rendered[name], "Deployment", "gateway"))
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert named == {"http": port}
        (service_port,) = find(rendered[name], "Service", "gateway")["spec"]["ports"]
        assert named[service_port["targetPort"]] == port


def test_triton_ports_are_the_same_everywhere(compose: dict[str, Any], rendered: Docs) -> None:
    ports = TritonPorts()  # what `emotorch triton` and the gateway's defaults use
    expected = {"http": ports.http, "grpc": ports.grpc, "metrics": ports.metrics}
    triton = compose["services"]["triton"]
    flags = {a.split("=")[0][2:-5]: int(a.split("=")[1]) for a in triton["command"] if re.match(r"--\w+-port=", a)}
    assert flags == expected
    assert _port_of(triton["healthcheck"]["test"][-1]) == ports.http
    assert _container_port(triton) == ports.http
    assert compose["services"]["gateway"]["environment"]["EMOTORCH_TRITON_URL"] == f"triton:{ports.grpc}"
    assert Settings().triton_url.endswith(f":{ports.grpc}")
    for name in KUSTOMIZATIONS:
        (container,) = containers(find(rendered[name], "Deployment", "triton"))
        args = {a.split("=")[0][2:-5]: int(a.split("=")[1]) for a in container["args"] if re.match(r"--\w+-port=", a)}
        assert args == expected
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == expected
        service = {p["name"]: p["port"] for p in find(rendered[name], "Service", "triton")["spec"]["ports"]}
        assert service == expected
        (gateway,) = containers(find(rendered[name], "Deployment", "gateway"))
        env = {e["name"]: e.get("value") for e in gateway["env"]}
        assert env["EMOTORCH_TRITON_URL"] == f"triton:{ports.grpc}"


def _emotorch_names(compose_docs: list[dict[str, Any]], rendered: Docs) -> set[str]:
    names = {k for k in read_env_file(ENV_EXAMPLE) if k.startswith("EMOTORCH_")}
    for document in compose_docs:
        for service in document["services"].values():
            names |= {k for k in service.get("environment", {}) if k.startswith("EMOTORCH_")}
    for docs in rendered.values():
        for doc in docs:
            if "template" in doc.get("spec", {}):
                names |= {
                    e["name"] for c in containers(doc) for e in c.get("env", []) if e["name"].startswith("EMOTORCH_")
                }
    for path in DOCKERFILES:
        names |= set(re.findall(r"\bEMOTORCH_[A-Z_]+", " ".join(_instruction_args(path, "ENV"))))
    return names


def test_every_emotorch_variable_is_a_gateway_setting(rendered: Docs) -> None:
    settings = {f"EMOTORCH_{field.upper()}" for field in Settings.model_fields}
    names = _emotorch_names([load_compose(p) for p in COMPOSE_FILES], rendered)
    assert {"EMOTORCH_TRITON_URL", "EMOTORCH_DATABASE_URL", "EMOTORCH_ADMIN_TOKEN"} <= names
    assert names <= settings, f"not gateway settings: {sorted(names - settings)}"


def _secret_examples() -> dict[str, dict[str, str]]:
    docs = yaml.safe_load_all((K8S / "base" / "secrets.example.yaml").read_text())
    return {d["metadata"]["name"]: d["stringData"] for d in docs}


def _k8s_gateway_environment(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The gateway container's environment, with Secret references filled from secrets.example.yaml."""
    (container,) = containers(find(docs, "Deployment", "gateway"))
    env = {}
    for entry in container["env"]:
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        env[entry["name"]] = _secret_examples()[ref["name"]][ref["key"]] if ref else entry["value"]
    return env


def test_gateway_settings_accept_the_deployed_values(
    compose: dict[str, Any], rendered: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    environments = {"compose": dict(compose["services"]["gateway"]["environment"])}
    environments |= {name: _k8s_gateway_environment(docs) for name, docs in rendered.items()}
    for where, environment in environments.items():
        for key in [k for k in os.environ if k.startswith("EMOTORCH_")]:
            monkeypatch.delenv(key)
        for key, value in environment.items():
            monkeypatch.setenv(key, str(value))
        settings = Settings()  # raises on a value the gateway would refuse at start
        assert settings.database_url.startswith("postgresql+psycopg://"), where
        assert settings.admin_token is not None and settings.admin_token.get_secret_value(), where
        # Forwarded headers are believed from the ingress alone: a handful of addresses, never a whole network.
        proxies = [ipaddress.ip_network(p) for p in settings.trusted_proxies]
        assert all(p.num_addresses <= 256 for p in proxies), (where, proxies)
        assert bool(proxies) == (where != "compose"), where  # compose publishes the gateway with nothing in front


def test_gateway_secrets_come_from_secrets(compose: dict[str, Any], rendered: Docs) -> None:
    raw = load_compose(COMPOSE_FILES[0])["services"]["gateway"]["environment"]
    assert any(v.is_required for v in variables(raw["EMOTORCH_ADMIN_TOKEN"]))
    assert any(v.is_required and "PASSWORD" in v.name for v in variables(raw["EMOTORCH_DATABASE_URL"]))
    for name in KUSTOMIZATIONS:
        (container,) = containers(find(rendered[name], "Deployment", "gateway"))
        env = {e["name"]: e for e in container["env"]}
        for secret in ("EMOTORCH_ADMIN_TOKEN", "EMOTORCH_DATABASE_URL"):
            assert "secretKeyRef" in env[secret].get("valueFrom", {}), f"{secret} must come from a Secret"


def test_the_feedback_store_is_the_compose_postgres(compose: dict[str, Any]) -> None:
    url = urlsplit(compose["services"]["gateway"]["environment"]["EMOTORCH_DATABASE_URL"])
    assert url.scheme == "postgresql+psycopg"
    database = compose["services"][url.hostname or ""]
    assert database["image"].startswith("postgres:") and url.port == 5432
    env = database["environment"]
    assert (url.username, url.password, url.path.lstrip("/")) == (
        env["POSTGRES_USER"],
        env["POSTGRES_PASSWORD"],
        env["POSTGRES_DB"],
    )
    assert "feedback-db" in compose["services"]["gateway"]["depends_on"]
    requirements = {canonicalize_name(r.name): r for r in _requirements()}
    assert "binary" in requirements["psycopg"].extras, "the psycopg driver must be in the gateway image"
    assert _secret_examples()["emotorch-gateway"]["database-url"].startswith("postgresql+psycopg://")


def test_mlflow_uses_postgres_and_the_minio_bucket(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]["environment"]
    store = urlsplit(mlflow["MLFLOW_BACKEND_STORE_URI"])
    database = compose["services"][store.hostname or ""]["environment"]
    assert (store.scheme, store.username, store.password, store.path.lstrip("/")) == (
        "postgresql",
        database["POSTGRES_USER"],
        database["POSTGRES_PASSWORD"],
        database["POSTGRES_DB"],
    )
    assert _port_of(mlflow["MLFLOW_S3_ENDPOINT_URL"]) == 9000 and "minio" in compose["services"]
    minio = compose["services"]["minio"]["environment"]
    assert (mlflow["AWS_ACCESS_KEY_ID"], mlflow["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    )
    bucket = urlsplit(mlflow["MLFLOW_ARTIFACTS_DESTINATION"]).hostname
    job = compose["services"]["minio-buckets"]
    created = re.findall(r"local/\$\{(\w+)\}", " ".join(job["command"]))
    assert bucket in {job["environment"][name] for name in created}


def test_mounted_built_and_copied_paths_exist(compose: dict[str, Any]) -> None:
    for path in COMPOSE_FILES:
        for name, service in load_compose(path, example_env())["services"].items():
            for volume in service.get("volumes", []):
                if isinstance(volume, dict) and volume["type"] == "bind":
                    assert (DEPLOY / volume["source"]).exists(), f"{name} mounts missing {volume['source']}"
                elif isinstance(volume, str):
                    assert volume.split(":")[0] in (load_compose(path).get("volumes") or {}), f"{name}: {volume}"
            if "build" in service:
                context = DEPLOY / service["build"]["context"]
                assert (context / service["build"]["dockerfile"]).is_file(), name
    for dockerfile in DOCKERFILES:
        ignore = Path(f"{dockerfile}.dockerignore")
        assert ignore.is_file(), f"{dockerfile.name} needs its own .dockerignore (the repository holds a .venv)"
        allowed = [line[1:].rstrip("/") for line in ignore.read_text().splitlines() if line.startswith("!")]
        for args in _instruction_args(dockerfile, "COPY"):
            *sources, _ = exec_form(args)
            for source in (s for s in sources if not s.startswith("--")):
                # A DVC stage output (not in git) exists once `dvc repro` has run, as the image's build requires.
                exists = (ROOT / source).exists() or source.rstrip("/") in _dvc_outputs()
                assert exists, f"{dockerfile.name} copies missing {source}"
                assert source.rstrip("/") in allowed, f"{dockerfile.name}: {source} is excluded from the build context"


def _dvc_outputs() -> set[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
    return {str(out) for stage in stages for out in stage.get("outs", [])}


def test_images_run_as_non_root_users() -> None:
    for dockerfile in DOCKERFILES:
        (user,) = _instruction_args(dockerfile, "USER")
        assert user.split(":")[0].isdigit() and int(user.split(":")[0]) > 0, f"{dockerfile.name}: USER {user}"


# The gateway image installs what the gateway imports, and no more.


def _requirements() -> list[Requirement]:
    lines = (line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _imports(path: Path, functions: set[str] | None = None) -> set[str]:
    """Modules imported by a file: at module level, plus inside the named functions (None: everywhere)."""
    tree = ast.parse(path.read_text())
    nodes: list[ast.AST] = list(tree.body) if functions is not None else list(ast.walk(tree))
    if functions is not None:
        nodes += [n for f in tree.body if isinstance(f, ast.FunctionDef) and f.name in functions for n in ast.walk(f)]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def gateway_image_imports() -> set[str]:
    """Top-level third-party modules `emotorch gateway` can import: the gateway package (every import), the CLI's
    module-level imports and its gateway command, and the project modules those reach (module level)."""
    pending = [(ROOT / "emotorch" / "cli.py", {"_cmd_gateway"})]
    pending += [(path, None) for path in sorted((ROOT / "gateway").rglob("*.py"))]
    seen: set[Path] = set()
    third_party: set[str] = set()
    while pending:
        path, functions = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path, functions if path.parent.name != "gateway" else None):
            top = module.split(".")[0]
            if top in ("emotorch", "gateway"):
                target = ROOT / Path(*module.split("."))
                file = target / "__init__.py" if target.is_dir() else target.with_suffix(".py")
                pending.append((file, set() if top == "emotorch" else None))
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    return third_party


def test_the_gateway_never_imports_torch_or_pipelines() -> None:
    modules = gateway_image_imports()
    assert {"fastapi", "cv2", "tritonclient", "uvicorn"} <= modules
    assert not modules & {"torch", "pipelines", "mlflow", "dvc"}


def test_the_gateway_requirements_cover_its_imports() -> None:
    distributions = importlib.metadata.packages_distributions()
    required = {canonicalize_name(r.name) for r in _requirements()}
    for module in gateway_image_imports():
        providers = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert providers, f"no installed distribution provides {module}"
        assert providers & required, f"{module} ({providers}) is not in {REQUIREMENTS.name}"
    assert "torch" not in required


def test_the_gateway_requirements_are_exact_pins_within_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {canonicalize_name(Requirement(d).name): Requirement(d) for d in project}
    for requirement in _requirements():
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{requirement}: pin an exact version"
        local = declared.get(canonicalize_name(requirement.name))
        if local is not None:
            assert local.specifier.contains(spec.version), f"{requirement} is outside pyproject's {local}"
            assert requirement.extras >= (local.extras - {"http"}), f"{requirement} lacks extras of {local}"


def test_triton_loads_the_model_the_gateway_asks_for(compose: dict[str, Any], rendered: Docs) -> None:
    published = yaml.safe_load((ROOT / "params.yaml").read_text())["publish"]["model_name"]
    assert Settings().model_name == published
    assert f"--load-model={published}" in compose["services"]["triton"]["command"]
    for name in KUSTOMIZATIONS:
        (container,) = containers(find(rendered[name], "Deployment", "triton"))
        assert f"--load-model={published}" in container["args"]
        assert "--model-control-mode=explicit" in container["args"]  # never poll a repository on S3


def test_triton_serves_the_libtorch_config_that_publish_writes(compose: dict[str, Any], rendered: Docs) -> None:
    from pipelines.triton_config import LIBTORCH_CONFIG

    assert LIBTORCH_CONFIG.parent.name == "configs"  # Triton's folder for --model-config-name
    flag = f"--model-config-name={LIBTORCH_CONFIG.stem}"
    assert flag in compose["services"]["triton"]["command"]
    for name in KUSTOMIZATIONS:
        (container,) = containers(find(rendered[name], "Deployment", "triton"))
        assert flag in container["args"]
