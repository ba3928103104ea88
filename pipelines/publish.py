"""Publish stage: add the exported model as version N+1 of the Triton model repository, atomically.

The version folder is built in a hidden staging folder beside the versions and moved into place with one
rename, so Triton never sees a half-written version (a SIGKILL midway leaves only a staging folder, which the
next publish removes). If a Triton server is given, publish asks it to load the new version (explicit load,
never unload: the old version serves until the new one is ready) and checks Triton's outputs against
TorchScript's; on failure the new version is removed again and the previous one keeps serving.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipelines.model_card import build_card, input_dims, render_markdown

logger = logging.getLogger(__name__)

BACKEND_SOURCE = Path(__file__).with_name("triton_model.py")
STAGING_PREFIX = ".staging-"


LIBTORCH_CONFIG = Path("configs") / "libtorch.pbtxt"  # Triton: --model-config-name=libtorch selects it
PYTHON_CONFIG = Path("config.pbtxt")
# What a publish leaves as it was found when it rolls back: each model-level config's previous text (None: absent).
PreviousConfigs = dict[Path, str | None]


@dataclass(frozen=True)
class PublishParams:
    model_name: str = "emotion"
    max_batch_size: int = 64
    instance_count: int = 2
    torch_threads: int = 1
    max_queue_delay_us: int = 500
    # The production configuration (NGC image, libtorch backend), written beside the python-backend one.
    libtorch_instance_kind: str = "KIND_GPU"
    libtorch_instance_count: int = 1
    libtorch_intra_op_threads: int = 1
    libtorch_inter_op_threads: int = 1

    def __post_init__(self) -> None:
        if self.libtorch_instance_kind not in ("KIND_GPU", "KIND_CPU"):
            kind = self.libtorch_instance_kind
            raise ValueError(f"libtorch_instance_kind must be KIND_GPU or KIND_CPU, not {kind!r}")

    @classmethod
    def from_yaml(cls, path: Path) -> PublishParams:
        return cls(**yaml.safe_load(path.read_text())["publish"])


class PublishError(RuntimeError):
    """The new version could not be published or did not serve correctly; the previous one is untouched."""


HIGH_WATER = ".last_version"  # the highest version ever published here: numbers are never reused


def next_version(model_dir: Path) -> int:
    """One above every version folder present and every version ever published (a folder removed by hand
    must not have its number given to a different model)."""
    mark = model_dir / HIGH_WATER
    text = mark.read_text().strip() if mark.is_file() else ""
    return max([int(text) if text.isdigit() else 0, *existing_versions(model_dir)]) + 1


def existing_versions(model_dir: Path) -> list[int]:
    """Published version numbers, ascending (Triton's rule: positive integers without leading zeros)."""
    if not model_dir.is_dir():
        return []
    names = (p.name for p in model_dir.iterdir() if p.is_dir())
    return sorted(int(n) for n in names if n.isdigit() and not n.startswith("0"))


def _pbtxt_string(value: str) -> str:
    """A protobuf text-format string literal: JSON's escapes for quotes, backslashes and control characters
    (valid in text format too), and octal escapes of the UTF-8 bytes of anything beyond ASCII."""
    literal = json.dumps(value, ensure_ascii=False)
    return "".join(c if ord(c) < 128 else "".join(f"\\{b:03o}" for b in c.encode()) for c in literal)


def render_config(
    params: PublishParams,
    labels: list[str],
    metadata: dict[str, Any],
    card_markdown: str | None = None,
    backend: str = "python",
) -> str:
    """A model-level config.pbtxt: contract, batching, instances, and the served version's metadata.

    backend "python": the python backend running model.py (what the bundled Triton serves, CPU instances).
    backend "libtorch": the NGC image's PyTorch backend loading model.pt itself (`platform: "pytorch_libtorch"`;
    the input is matched to forward()'s argument `image`, the single output by its place in the config).
    """
    if backend == "python":
        header = 'backend: "python"'
        instances = f"instance_group [ {{ kind: KIND_CPU count: {params.instance_count} }} ]"
        parameters: dict[str, str] = {"torch_threads": str(params.torch_threads)}
    elif backend == "libtorch":
        header = 'platform: "pytorch_libtorch"\ndefault_model_filename: "model.pt"'
        instances = (
            f"instance_group [ {{ kind: {params.libtorch_instance_kind} count: {params.libtorch_instance_count} }} ]"
        )
        parameters = {
            "INTRA_OP_THREAD_COUNT": str(params.libtorch_intra_op_threads),
            "INTER_OP_THREAD_COUNT": str(params.libtorch_inter_op_threads),
        }
    else:
        raise ValueError(f"unknown backend {backend!r}: python or libtorch")
    parameters |= {
        "labels": json.dumps(labels),
        "metadata": json.dumps(metadata, separators=(",", ":"), sort_keys=True),
    }
    if card_markdown is not None:
        parameters["model_card"] = card_markdown
    parameter_lines = "\n".join(
        f"parameters {{ key: {_pbtxt_string(k)} value: {{ string_value: {_pbtxt_string(v)} }} }}"
        for k, v in parameters.items()
    )
    return f"""name: "{params.model_name}"
{header}
max_batch_size: {params.max_batch_size}
input [
  {{ name: "image" data_type: TYPE_UINT8 dims: [ {", ".join(str(d) for d in input_dims(metadata))} ] }}
]
output [
  {{ name: "probabilities" data_type: TYPE_FP32 dims: [ {len(labels)} ] }}
]
{instances}
dynamic_batching {{ max_queue_delay_microseconds: {params.max_queue_delay_us} }}
version_policy: {{ latest: {{ num_versions: 1 }} }}
{parameter_lines}
"""


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=STAGING_PREFIX)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; Triton may run as another user
    os.replace(tmp, path)


def remove_stale_staging(model_dir: Path) -> None:
    """Remove what an interrupted publish left behind."""
    configs = model_dir / LIBTORCH_CONFIG.parent
    for leftover in [*model_dir.glob(f"{STAGING_PREFIX}*"), *configs.glob(f"{STAGING_PREFIX}*")]:
        logger.warning("removing leftover %s from an interrupted publish", leftover)
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


def publish_version(
    repository: Path, model_pt: Path, export_metadata: dict[str, Any], params: PublishParams
) -> tuple[int, PreviousConfigs]:
    """Write version N+1 and the configs describing it; return (N+1, the configs as they were before)."""
    model_dir = repository / params.model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(model_dir)
    version = next_version(model_dir)
    labels = list(export_metadata["labels"])
    metadata: dict[str, Any] = {
        "version": version,
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **{
            k: export_metadata[k]
            for k in (
                "run_id",
                "registry_version",
                "evaluation",
                "data_fingerprint",
                "val_accuracy",
                "model",
                "parameters",
                "input",
                "output",
                "temperature",
                "reference",
                "weights",
            )
            if k in export_metadata
        },
    }
    if "input_reference" in export_metadata:  # per-face brightness and contrast: the input-drift reference
        metadata["input_reference"] = export_metadata["input_reference"]
    elif "mean" in export_metadata:  # exports before 2026-11: only the global pixel statistics were recorded
        metadata["input_reference"] = {"brightness": export_metadata["mean"], "contrast": export_metadata["std"]}
    card_markdown = None
    if "data" in export_metadata and "evaluation" in export_metadata:
        card = build_card(export_metadata | {"model_name": params.model_name}, export_metadata["data"], version)
        metadata["card"] = card
        metadata["synthetic_training_data"] = card["synthetic_training_data"]
        card_markdown = render_markdown(card)
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=STAGING_PREFIX))
    shutil.copyfile(model_pt, staging / "model.pt")
    shutil.copyfile(BACKEND_SOURCE, staging / "model.py")
    (staging / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    (staging / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    if card_markdown is not None:
        (staging / "model_card.md").write_text(card_markdown, encoding="utf-8")
        (staging / "model_card.json").write_text(json.dumps(metadata["card"], indent=2) + "\n", encoding="utf-8")
    for f in staging.iterdir():
        with f.open("rb") as handle:
            os.fsync(handle.fileno())
    staging.chmod(0o755)
    os.rename(staging, model_dir / str(version))  # the one step that makes the version visible
    _write_atomic(model_dir / HIGH_WATER, f"{version}\n")
    configs = {
        LIBTORCH_CONFIG: render_config(params, labels, metadata, card_markdown, "libtorch"),
        PYTHON_CONFIG: render_config(params, labels, metadata, card_markdown),  # last: what the local Triton reads
    }
    previous = {path: _read_if_exists(model_dir / path) for path in configs}
    (model_dir / LIBTORCH_CONFIG).parent.mkdir(exist_ok=True)
    for path, text in configs.items():
        _write_atomic(model_dir / path, text)
    return version, previous


def _read_if_exists(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None


def rollback(repository: Path, params: PublishParams, version: int, previous: PreviousConfigs) -> None:
    """Remove a version that failed to serve and restore the configs of the one still serving."""
    model_dir = repository / params.model_name
    doomed = model_dir / f"{STAGING_PREFIX}rollback-{version}"
    os.rename(model_dir / str(version), doomed)
    shutil.rmtree(doomed)
    for path, text in previous.items():
        if text is not None:
            _write_atomic(model_dir / path, text)
        else:
            (model_dir / path).unlink(missing_ok=True)


def load_and_verify(
    triton_url: str,
    params: PublishParams,
    version: int,
    model_pt: Path,
    dims: list[int],
    timeout_s: float = 120.0,
) -> float:
    """Ask Triton to load the newest version, wait for it, and compare its outputs with TorchScript's."""
    import torch
    import tritonclient.http as triton_http
    from tritonclient.utils import InferenceServerException

    client = triton_http.InferenceServerClient(triton_url, connection_timeout=timeout_s, network_timeout=timeout_s)
    try:
        client.load_model(params.model_name)
        deadline = time.monotonic() + timeout_s
        while not client.is_model_ready(params.model_name, str(version)):
            if time.monotonic() > deadline:
                raise PublishError(f"version {version} not ready in Triton after {timeout_s:.0f} s")
            time.sleep(0.2)
        samples = np.random.default_rng(version).integers(0, 256, size=(64, *dims), dtype=np.uint8)
        infer_input = triton_http.InferInput("image", list(samples.shape), "UINT8")
        infer_input.set_data_from_numpy(samples)
        result = client.infer(params.model_name, [infer_input], model_version=str(version))
        served = result.as_numpy("probabilities")
    except InferenceServerException as e:
        raise PublishError(f"Triton at {triton_url} failed to load/serve version {version}: {e}") from e
    finally:
        client.close()
    with torch.no_grad():
        expected = torch.jit.load(str(model_pt), map_location="cpu")(torch.from_numpy(samples)).numpy()
    max_diff = float(np.abs(served - expected).max())
    if not max_diff <= 1e-5:
        raise PublishError(f"Triton's outputs for version {version} differ from TorchScript by {max_diff:.3g}")
    return max_diff


def _log_model_card(version_dir: Path, run_id: str | None) -> None:
    """Attach the published version's model card to its MLflow run. Best effort: the version is already
    published with its card in its folder; a tracking store without that run only earns a warning."""
    if run_id is None or not (version_dir / "model_card.md").exists():
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow.exceptions import MlflowException

    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        logger.warning("model card not attached to MLflow: no tracking database at %s", tracking_uri)
        return  # never create an empty tracking database as a side effect
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run(run_id=run_id):
            mlflow.log_artifact(str(version_dir / "model_card.md"), artifact_path="model_card")
            mlflow.log_artifact(str(version_dir / "model_card.json"), artifact_path="model_card")
    except MlflowException as e:
        logger.warning("model card not attached to MLflow run %s at %s: %s", run_id, tracking_uri, e)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path, required=True, help="exported TorchScript model.pt")
    parser.add_argument("--metadata", type=Path, required=True, help="export metadata JSON")
    parser.add_argument("--repository", type=Path, required=True, help="Triton model repository root")
    parser.add_argument("--receipt", type=Path, required=True, help="JSON receipt to write")
    parser.add_argument("--promotion", type=Path, default=None,
                        help="promotion.json of the promote stage: publish only a promoted champion")  # fmt: skip
    parser.add_argument(
        "--triton-url",
        default=os.environ.get("EMOTORCH_PUBLISH_TRITON_URL"),
        help="HTTP address of a running Triton (host:port) to load the new version into (optional)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    params = PublishParams.from_yaml(args.params)
    export_metadata = json.loads(args.metadata.read_text())
    args.receipt.parent.mkdir(parents=True, exist_ok=True)
    if args.promotion is not None:
        decision = json.loads(args.promotion.read_text())
        if not decision["promoted"]:
            logger.warning("not publishing: the challenger was not promoted (%s)", "; ".join(decision["reasons"]))
            skipped = {"model": params.model_name, "published": False, "reasons": decision["reasons"]}
            args.receipt.write_text(json.dumps(skipped, indent=2) + "\n")
            return
        export_metadata = export_metadata | {"registry_version": decision["challenger"]["registry_version"]}
    version, previous = publish_version(args.repository, args.model, export_metadata, params)
    logger.info("published %s version %d in %s", params.model_name, version, args.repository)
    receipt: dict[str, Any] = {"model": params.model_name, "published": True, "version": version,
                               "loaded_by_triton": False}  # fmt: skip
    if args.triton_url:
        try:
            receipt["triton_max_abs_diff"] = load_and_verify(args.triton_url, params, version, args.model,
                                                             dims=input_dims(export_metadata))  # fmt: skip
            receipt["loaded_by_triton"] = True
            logger.info("Triton at %s serves version %d", args.triton_url, version)
        except PublishError as e:
            rollback(args.repository, params, version, previous)
            raise SystemExit(f"publish failed, version {version} removed, previous version still serves: {e}") from e
    _log_model_card(args.repository / params.model_name / str(version), export_metadata.get("run_id"))
    args.receipt.write_text(json.dumps(receipt, indent=2) + "\n")


if __name__ == "__main__":
    main()
