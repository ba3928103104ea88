"""The detection benchmark: fixed recipe, its figures and the JSON the issue specifies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench import detection
from bench.faces import BACKGROUNDS, CALIBRATION_BACKGROUNDS, CANVAS, cases


def test_the_recipe_is_fixed_by_its_seed() -> None:
    first, again, other = cases(3, seed=5, views=1), cases(3, seed=5, views=1), cases(3, seed=6, views=1)
    assert all(np.array_equal(a.gray, b.gray) and a.box == b.box for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0].gray, other[0].gray)


def test_faces_lie_inside_the_canvas_and_backgrounds_have_none() -> None:
    images = cases(6, seed=0, views=1)
    assert len(images) == 6 + len(BACKGROUNDS)
    for case in images[:6]:
        assert case.gray.shape == CANVAS and case.box is not None
        x, y, w, h = case.box
        assert 0 <= x and 0 <= y and x + w <= CANVAS[1] and y + h <= CANVAS[0]
        assert 0.05 <= case.face_fraction <= 0.6
    assert [abs(c.angle_deg) == 0 for c in images[:3]] == [True, False, False]  # upright, mild, tilted in turn
    assert 20 <= abs(images[2].angle_deg) <= 30
    assert all(case.box is None for case in images[6:])


def test_calibration_uses_other_backgrounds() -> None:
    assert not set(BACKGROUNDS) & set(CALIBRATION_BACKGROUNDS)


def test_a_small_run_writes_both_detectors_figures(tmp_path: Path, detector_dir: Path) -> None:
    out = tmp_path / "detection.json"
    assert detection.main(["--faces", "6", "--models", str(detector_dir), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["detectors"]) == {"haar", "mtcnn", "mtcnn, faces from 5%"} and result["default"] == "mtcnn"
    for figures in result["detectors"].values():
        assert 0 <= figures["recall"] <= 1 and 0 <= figures["recall_tilted"] <= 1
        assert figures["false_positives_per_image"] >= 0 and figures["cpu_ms_per_photo"] > 0
    assert result["detectors"]["mtcnn"]["landmark_cases"] >= 1  # the measured photos appear in the first case
    assert result["detectors"]["haar"]["landmark_error"] is None
