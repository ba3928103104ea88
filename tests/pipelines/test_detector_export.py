"""The `detector` stage: MTCNN's weights from the facenet-pytorch wheel, exported to ONNX that OpenCV runs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipelines.detector_export import PARITY_TOLERANCE, load_network, parity, weights_dir
from pipelines.mtcnn import NETWORKS, ONet, PNet

# Parameter counts of the published networks (Zhang et al. 2016) as facenet-pytorch ships them.
PARAMETERS = {"pnet": 6_632, "rnet": 100_178, "onet": 389_040}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_our_modules_take_the_shipped_weights_exactly(name: str) -> None:
    net = load_network(name, weights_dir())  # load_state_dict is strict: a missing or extra name fails
    assert sum(p.numel() for p in net.parameters()) == PARAMETERS[name]


def test_the_exported_networks_and_their_record(detector_dir: Path) -> None:
    record = json.loads((detector_dir / "mtcnn.json").read_text())
    assert record["weights"] == "facenet-pytorch==2.6.0" and record["licence"] == "MIT"
    for name, info in record["networks"].items():
        assert info["parameters"] == PARAMETERS[name]
        assert info["parity_max_abs"] <= PARITY_TOLERANCE
        assert (detector_dir / info["file"]).is_file()


def test_parity_catches_an_export_that_does_not_match(tmp_path: Path) -> None:
    net = load_network("pnet", weights_dir())
    other = PNet().eval()  # untrained: different outputs from the same graph
    from pipelines.detector_export import export_onnx

    export_onnx(other, "pnet", tmp_path / "pnet.onnx")
    assert parity(net, "pnet", tmp_path / "pnet.onnx") > 1e-2


def test_pnet_runs_on_any_size_and_onet_on_any_batch_in_opencv(detector_dir: Path) -> None:
    pnet = cv2.dnn.readNetFromONNX(str(detector_dir / "pnet.onnx"))
    pnet.setInput(np.zeros((1, 3, 30, 50), np.float32))
    probability, offsets = pnet.forward(["probability", "offsets"])
    assert probability.shape == (1, 10, 20) and offsets.shape == (1, 4, 10, 20)  # (30 - 2) / 2 - 4 = 10
    onet = cv2.dnn.readNetFromONNX(str(detector_dir / "onet.onnx"))
    onet.setInput(np.zeros((3, 3, 48, 48), np.float32))
    probability, offsets, landmarks = onet.forward(["probability", "offsets", "landmarks"])
    assert probability.reshape(-1).shape == (3,) and offsets.shape == (3, 4) and landmarks.shape == (3, 10)


def test_the_face_probability_is_a_softmax_output() -> None:
    net = ONet().eval()
    with torch.no_grad():
        probability, _, _ = net(torch.rand(4, 3, 48, 48))
    assert ((probability >= 0) & (probability <= 1)).all()
