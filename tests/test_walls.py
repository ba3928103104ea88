"""The walls between the parts (docs/architecture.md), read from the code: every import anywhere in a file,
function-level ones included, not only what runs at import time.

- pipelines/ never imports gateway/ or bench/: the training side does not depend on the serving side.
- gateway/ never imports torch, pipelines/, bench/, mlflow or dvc: its image stays small and starts fast
  (tests/deploy/test_consistency.py also follows what `emotorch gateway` reaches at run time).
- The emotorch modules that both sides share (the Triton contract, the logging set-up) use the standard
  library only, so that sharing them moves no dependency across the wall.
- bench/ and emotorch/ may use both sides; nothing in the product imports bench/ or tests/.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("emotorch/contract.py", "emotorch/logs.py")


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (absolute imports; relative ones stay in the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("pipelines", {"gateway", "bench", "tests"}),
        ("gateway", {"torch", "torchvision", "pipelines", "bench", "tests", "mlflow", "dvc"}),
        ("emotorch", {"bench", "tests"}),
    ],
)
def test_a_part_never_imports_across_its_wall(package: str, forbidden: set[str]) -> None:
    crossings = {
        f"{path.relative_to(ROOT)} imports {sorted(imported_modules(path) & forbidden)}"
        for path in sources(package)
        if imported_modules(path) & forbidden
    }
    assert not crossings, sorted(crossings)


@pytest.mark.parametrize("shared", SHARED)
def test_modules_shared_by_both_sides_use_the_standard_library_only(shared: str) -> None:
    path = ROOT / shared
    outside = imported_modules(path) - set(sys.stdlib_module_names) - {"__future__"}
    assert not outside, f"{shared} imports {sorted(outside)}: the gateway image and the pipeline both load it"


def test_the_walls_test_sees_a_crossing(tmp_path: Path) -> None:
    """The reader itself: a function-level import counts as much as a module-level one."""
    module = tmp_path / "m.py"
    module.write_text("import json\n\ndef f():\n    from pipelines.model import build_model\n    import torch.nn\n")
    assert imported_modules(module) == {"json", "pipelines", "torch"}
