"""Box arithmetic of the cascade detector: NMS, regression, squaring, IoU."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.boxes import iou_xywh, nms, overlaps, regress, square


def corners(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(rows, dtype=np.float64)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 0, 10, 10), 50 / 150),
        ((0, 0, 10, 10), (10, 10, 5, 5), 0.0),  # touching corners share no area
        ((0, 0, 10, 10), (2, 2, 5, 5), 25 / 100),
    ],
)
def test_iou_of_xywh_boxes(a: tuple[int, ...], b: tuple[int, ...], expected: float) -> None:
    assert iou_xywh(a, b) == pytest.approx(expected)  # type: ignore[arg-type]


def test_min_mode_measures_overlap_against_the_smaller_box() -> None:
    big, inner = corners((0, 0, 10, 10)), corners((2, 2, 6, 6))
    assert overlaps(big[0], inner, "union")[0] == pytest.approx(16 / 100)
    assert overlaps(big[0], inner, "min")[0] == pytest.approx(1.0)


def test_nms_keeps_the_best_of_each_cluster_best_first() -> None:
    boxes = corners((0, 0, 10, 10), (1, 1, 11, 11), (50, 50, 60, 60), (0.5, 0, 10.5, 10))
    scores = np.array([0.8, 0.9, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]  # 0 and 3 overlap box 1 by more than 0.5


def test_nms_threshold_decides_what_overlaps_enough() -> None:
    boxes = corners((0, 0, 10, 10), (5, 0, 15, 10))  # IoU 1/3
    scores = np.array([0.9, 0.8])
    assert nms(boxes, scores, 0.3).tolist() == [0]
    assert nms(boxes, scores, 0.4).tolist() == [0, 1]


def test_nms_min_mode_drops_a_box_nested_in_a_better_one() -> None:
    boxes = corners((0, 0, 20, 20), (5, 5, 10, 10))  # IoU 0.0625, but fully inside
    scores = np.array([0.9, 0.8])
    assert nms(boxes, scores, 0.7, "union").tolist() == [0, 1]
    assert nms(boxes, scores, 0.7, "min").tolist() == [0]


def test_nms_of_nothing_is_nothing() -> None:
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_regression_moves_each_corner_by_its_offset_times_the_box_size() -> None:
    boxes = corners((10, 20, 30, 60))  # 20 wide, 40 high
    offsets = np.array([[0.1, -0.25, 0.0, 0.5]])
    np.testing.assert_allclose(regress(boxes, offsets), [[12, 10, 30, 80]])


def test_square_grows_the_short_side_around_the_centre() -> None:
    np.testing.assert_allclose(square(corners((10, 20, 30, 60))), [[0, 20, 40, 60]])
    np.testing.assert_allclose(square(corners((0, 0, 8, 8))), [[0, 0, 8, 8]])
