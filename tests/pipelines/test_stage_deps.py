"""dvc.yaml's code deps are derived from the code: each stage lists every project module its entry modules
import (`pipelines/`, and the `emotorch/` modules the pipeline shares with the gateway: the Triton contract, the
logging set-up), transitively and function-level imports included, and every file beside them they read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
PROJECT_PACKAGES = ("pipelines", "emotorch")  # what a stage may import from the project (tests/test_walls.py)
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
WRAPPER = re.compile(r"^sh pipelines/stage\.sh (\w+)\b")


def entry_modules(stage: dict) -> list[str]:
    """The `pipelines.<name>` modules a stage's command(s) run, through the interpreter-picking wrapper."""
    commands = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
    found = []
    for command in commands:
        match = WRAPPER.match(" ".join(command.split()))
        assert match, f"{command!r} does not run through pipelines/stage.sh (which finds the project's Python)"
        found.append(match.group(1))
    return found


def _module_file(name: str) -> Path | None:
    """The file of a project module (`pipelines.x`, `emotorch.y`), None for anything else."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    path = ROOT / f"{name.replace('.', '/')}.py"
    return path if path.is_file() else None


def direct_dependencies(path: Path) -> set[Path]:
    """Modules of `pipelines` that `path` imports anywhere, and files beside them that it names."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and 0 < len(node.value) < 200:
            candidate = PIPELINES / node.value
            if "\n" not in node.value and candidate.is_file() and candidate.resolve() != path.resolve():
                found.add(candidate)
        for name in names:
            module = _module_file(name)
            if module is not None:
                found.add(module)
    return found


def closure(modules: list[str]) -> set[Path]:
    todo = [PIPELINES / f"{m}.py" for m in modules]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.suffix == ".py":
            todo.extend(direct_dependencies(path) - seen)
    return seen


def listed(stage: dict) -> set[str]:
    return {d for d in stage.get("deps", []) if d.split("/")[0] in PROJECT_PACKAGES}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_lists_every_module_it_imports(name: str) -> None:
    needed = {p.relative_to(ROOT).as_posix() for p in closure(entry_modules(STAGES[name]))}
    missing = needed - listed(STAGES[name])
    assert not missing, f"dvc.yaml stage {name!r} imports or reads these but does not list them: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_lists_no_file_that_does_not_exist(name: str) -> None:
    absent = sorted(d for d in listed(STAGES[name]) if not (ROOT / d).exists())
    assert not absent, f"dvc.yaml stage {name!r} lists deps that do not exist: {absent}"


def test_no_stage_imports_another_stage() -> None:
    entries = {PIPELINES / f"{m}.py": m for stage in STAGES.values() for m in entry_modules(stage)}
    for path, module in entries.items():
        others = {entries[p] for p in closure([module]) if p in entries and p != path}
        assert not others, f"pipelines/{module}.py imports other stages {sorted(others)}: move the shared code out"


def test_the_closure_follows_function_level_imports_and_named_files(tmp_path: Path) -> None:
    """The derivation itself: a function-level import and a file named beside the module are both found."""
    publish = closure(["publish"])
    assert PIPELINES / "triton_model.py" in publish and PIPELINES / "model_card.py" in publish
    assert PIPELINES / "reference" / "fer2013_mini_xception" / "parity.npz" in closure(["train"])
