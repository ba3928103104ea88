"""The Triton contract of a published model: the model-level configs (python backend and libtorch) that
describe its input, output, batching and instances, and the settings they are rendered from.

Publish writes them; the gateway reads the same fields back through Triton's config API. The names and keys
both sides use are `emotorch.contract`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from emotorch import contract
from emotorch.contract import input_dims

__all__ = ["LIBTORCH_CONFIG", "PYTHON_CONFIG", "PublishParams", "input_dims", "render_config"]

LIBTORCH_CONFIG = Path("configs") / "libtorch.pbtxt"  # Triton: --model-config-name=libtorch selects it
PYTHON_CONFIG = Path("config.pbtxt")

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

    The version policy names the one version that serves (`metadata["version"]`), not the newest folder: a
    rollback to the champion's earlier version is a config change, never a folder removed or copied.

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
    parameters |= contract.parameters(labels, metadata, card_markdown)
    parameter_lines = "\n".join(
        f"parameters {{ key: {_pbtxt_string(k)} value: {{ string_value: {_pbtxt_string(v)} }} }}"
        for k, v in parameters.items()
    )
    dims = ", ".join(str(d) for d in input_dims(metadata))
    return f"""name: "{params.model_name}"
{header}
max_batch_size: {params.max_batch_size}
input [
  {{ name: "{contract.INPUT_NAME}" data_type: {contract.INPUT_TRITON_TYPE} dims: [ {dims} ] }}
]
output [
  {{ name: "{contract.OUTPUT_NAME}" data_type: {contract.OUTPUT_TRITON_TYPE} dims: [ {len(labels)} ] }}
]
{instances}
dynamic_batching {{ max_queue_delay_microseconds: {params.max_queue_delay_us} }}
version_policy: {{ specific: {{ versions: [ {int(metadata["version"])} ] }} }}
{parameter_lines}
"""
