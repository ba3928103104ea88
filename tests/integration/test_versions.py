"""Each version carries its own metadata: two versions whose abstention thresholds and cards differ, served one
after the other and after a rollback, each answered with its own threshold and card by the gateway."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipelines.repository import serve_version
from pipelines.synthetic import generate_faces
from pipelines.triton_config import PublishParams, input_dims
from pipelines.triton_load import load_and_verify
from tests.integration.conftest import ServedProject, served_project
from tests.integration.test_serving import post_face

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(pipeline_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProject]:
    """A copy of the session project's repository and exported model, served by its own Triton and gateway."""
    root = tmp_path_factory.mktemp("versions")
    shutil.copytree(pipeline_project / "model_repository", root / "model_repository")
    shutil.copytree(pipeline_project / "models", root / "models", ignore=shutil.ignore_patterns("train_state"))
    shutil.copy(pipeline_project / "params.yaml", root / "params.yaml")
    with served_project(root, tmp_path_factory, "versions") as served:
        yield served


def publish_with_threshold(stack: ServedProject, threshold: float) -> int:
    """Publish the exported model by hand as a new version whose own metadata carries `threshold`."""
    export = json.loads((stack.project / "models" / "export.json").read_text())
    export["evaluation"]["abstention"]["threshold"] = threshold
    metadata = stack.project / f"export-{threshold}.json"
    metadata.write_text(json.dumps(export))
    receipt = stack.project / f"receipt-{threshold}.json"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.publish", "--params", "params.yaml", "--model", "models/model.pt",
         "--metadata", str(metadata), "--repository", "model_repository", "--receipt", str(receipt),
         "--triton-url", stack.triton.http_url],
        cwd=stack.project, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(receipt.read_text())
    assert answer["loaded_by_triton"] is True
    return int(answer["version"])


def answered(stack: ServedProject) -> tuple[str, bool, dict]:  # type: ignore[type-arg]
    """(version that answered a face, whether it was 'uncertain', GET /v1/model) after one request."""
    _, face = next(iter(generate_faces(1, seed=5)))
    body = post_face(stack.gateway_url, face).json()
    described = httpx.get(f"{stack.gateway_url}/v1/model", timeout=10).json()
    return body["model"]["version"], body["faces"][0]["uncertain"], described


def test_each_version_is_answered_with_its_own_threshold_and_card(stack: ServedProject) -> None:
    lenient = publish_with_threshold(stack, 0.0)  # never abstains
    version, uncertain, described = answered(stack)
    assert version == described["version"] == str(lenient) and not uncertain
    assert described["abstention"]["threshold"] == 0.0 and described["abstention"]["source"] == "model"
    assert described["card"].startswith(f"# Model card: emotion v{lenient}")

    strict = publish_with_threshold(stack, 0.999)  # abstains on practically every face
    version, uncertain, described = answered(stack)
    assert version == described["version"] == str(strict) and uncertain
    assert described["abstention"]["threshold"] == 0.999
    assert described["card"].startswith(f"# Model card: emotion v{strict}") and "0.9990" in described["card"]

    # Roll back to the lenient version the way the release stage does: its own folder renders the config.
    params = PublishParams.from_yaml(stack.project / "params.yaml")
    serve_version(stack.project / "model_repository", params, lenient)
    metadata = json.loads((stack.project / "model_repository" / "emotion" / str(lenient) / "metadata.json").read_text())
    load_and_verify(stack.triton.http_url, params, lenient, stack.project / "models" / "model.pt",
                    dims=input_dims(metadata))  # fmt: skip
    version, uncertain, described = answered(stack)
    assert version == described["version"] == str(lenient) and not uncertain
    assert described["abstention"]["threshold"] == 0.0
    assert described["card"].startswith(f"# Model card: emotion v{lenient}") and "0.9990" not in described["card"]
    # Each version's folder still holds its own figures, whatever serves.
    for number, threshold in ((lenient, 0.0), (strict, 0.999)):
        folder = stack.project / "model_repository" / "emotion" / str(number)
        assert json.loads((folder / "metadata.json").read_text())["evaluation"]["abstention"]["threshold"] == threshold
