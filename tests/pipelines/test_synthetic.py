from __future__ import annotations

import numpy as np
import pytest

from pipelines.labels import LABELS
from pipelines.synthetic import PROTOTYPES, GeneratorConfig, draw_face, expression_for, generate_faces


def test_same_seed_same_faces() -> None:
    a = list(generate_faces(30, seed=7))
    b = list(generate_faces(30, seed=7))
    assert [label for label, _ in a] == [label for label, _ in b]
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True))


def test_other_seed_other_faces() -> None:
    a = np.stack([f for _, f in generate_faces(10, seed=1)])
    b = np.stack([f for _, f in generate_faces(10, seed=2)])
    assert not np.array_equal(a, b)


def test_faces_are_48x48_uint8_and_not_blank() -> None:
    for _, face in generate_faces(21, seed=0):
        assert face.shape == (48, 48) and face.dtype == np.uint8
        assert face.std() > 5


@pytest.mark.parametrize("n", [7, 50, 701])
def test_every_class_is_drawn_with_balanced_counts(n: int) -> None:
    counts = np.bincount([label for label, _ in generate_faces(n, seed=3)], minlength=len(LABELS))
    assert counts.sum() == n
    assert counts.max() - counts.min() <= 1


def test_class_weights_shape_the_mix() -> None:
    weights = dict.fromkeys(LABELS, 1.0) | {"disgust": 0.0}
    labels = [label for label, _ in generate_faces(70, seed=3, class_weights=weights)]
    assert LABELS.index("disgust") not in labels


def test_every_label_has_a_prototype_and_neutral_is_the_rest_pose() -> None:
    assert set(PROTOTYPES) == set(LABELS)
    rng = np.random.default_rng(0)
    neutral = expression_for("neutral", 1.0, rng, jitter=0.0)
    assert neutral == PROTOTYPES["neutral"]


def test_weak_expressions_approach_neutral() -> None:
    rng = np.random.default_rng(0)
    weak = expression_for("surprise", 0.0, rng, jitter=0.0)
    strong = expression_for("surprise", 1.0, rng, jitter=0.0)
    assert weak == PROTOTYPES["neutral"]
    assert strong.mouth_open > weak.mouth_open + 0.5


def test_expressions_differ_visibly_on_average() -> None:
    """Mean faces of two classes differ where the expression lives (mouth region for happy vs surprise)."""
    cfg = GeneratorConfig(max_rotation_deg=0, max_shift_px=0, scale_range=(1.0, 1.0))
    rng = np.random.default_rng(0)
    happy = np.mean([draw_face("happy", rng, cfg) for _ in range(40)], axis=0)
    surprise = np.mean([draw_face("surprise", rng, cfg) for _ in range(40)], axis=0)
    mouth = slice(32, 46), slice(12, 36)
    assert np.abs(happy[mouth] - surprise[mouth]).mean() > 3.0
