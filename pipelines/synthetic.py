"""Deterministic synthetic 48x48 grayscale faces drawn from facial-action parameters.

The embedded default dataset: FER2013 itself cannot be downloaded here. Each face is a random identity
(face shape, skin tone, hair, feature placement) wearing an expression given by a few action parameters
(brows, eyes, mouth, nose wrinkle, upper-lip raise). The expression is blended with neutral by a random
intensity and perturbed per person, so weak expressions overlap and a good model cannot reach 100%.
Faces are rendered at 4x resolution and area-downsampled, then posed (shift, scale, rotation) and degraded
(lighting gradient, blur, noise) the way webcam crops are.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from pipelines.labels import IMAGE_SIZE, LABELS

_SCALE = 4  # render at 4x and area-downsample: cheap anti-aliasing
_CANVAS = IMAGE_SIZE * _SCALE


@dataclass(frozen=True)
class Expression:
    """Facial-action parameters; neutral is all zeros except openness and width at 1."""

    brow_raise: float = 0.0  # -1 lowered .. 1 raised
    brow_inner: float = 0.0  # -1 inner ends pulled down (angry) .. 1 inner ends up (sad, fear)
    eye_open: float = 1.0  # 0 closed .. 1.6 wide
    mouth_curve: float = 0.0  # -1 corners down .. 1 corners up
    mouth_open: float = 0.0  # 0 closed .. 1 wide open
    mouth_width: float = 1.0  # relative to the neutral width
    nose_wrinkle: float = 0.0  # 0 .. 1
    lip_raise: float = 0.0  # 0 .. 1, asymmetric upper-lip raise (disgust)

    def as_array(self) -> np.ndarray:
        return np.array(
            [
                self.brow_raise,
                self.brow_inner,
                self.eye_open,
                self.mouth_curve,
                self.mouth_open,
                self.mouth_width,
                self.nose_wrinkle,
                self.lip_raise,
            ],
            dtype=np.float64,
        )

    @classmethod
    def from_array(cls, values: np.ndarray) -> Expression:
        return cls(*(float(v) for v in values))


NEUTRAL = Expression()
# Prototypes loosely follow FACS action units (Ekman & Friesen): e.g. surprise = AU1+2 (brows up),
# AU5 (upper lid raised), AU26 (jaw drop); disgust = AU9 (nose wrinkle) + AU10 (upper-lip raise).
PROTOTYPES: dict[str, Expression] = {
    "angry": Expression(-0.9, -1.0, 0.65, -0.35, 0.05, 0.85, 0.35, 0.0),
    "disgust": Expression(-0.45, -0.35, 0.6, -0.55, 0.12, 0.95, 1.0, 0.9),
    "fear": Expression(0.65, 0.9, 1.45, -0.25, 0.45, 1.2, 0.0, 0.0),
    "happy": Expression(0.1, 0.0, 0.7, 1.0, 0.35, 1.25, 0.1, 0.0),
    "neutral": NEUTRAL,
    "sad": Expression(0.15, 0.95, 0.7, -0.85, 0.0, 0.9, 0.0, 0.0),
    "surprise": Expression(1.0, 0.15, 1.55, 0.0, 1.0, 0.75, 0.0, 0.0),
}


@dataclass(frozen=True)
class GeneratorConfig:
    """How hard the faces are: expression intensity range, per-person jitter and image degradations."""

    min_intensity: float = 0.2
    max_intensity: float = 1.0
    expression_jitter: float = 0.12
    max_rotation_deg: float = 10.0
    max_shift_px: float = 3.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_light_gradient: float = 0.35
    max_blur_sigma: float = 1.0
    max_noise_sigma: float = 8.0


def expression_for(label: str, intensity: float, rng: np.random.Generator, jitter: float) -> Expression:
    """Blend neutral toward the label's prototype by `intensity`, then add a person's idiosyncrasy."""
    neutral = NEUTRAL.as_array()
    target = PROTOTYPES[label].as_array()
    values = neutral + intensity * (target - neutral) + rng.normal(0.0, jitter, size=neutral.shape)
    values[2] = max(values[2], 0.05)  # eyes never open a negative amount
    values[4] = max(values[4], 0.0)
    values[5] = max(values[5], 0.5)
    values[6] = max(values[6], 0.0)
    values[7] = max(values[7], 0.0)
    return Expression.from_array(values)


@dataclass
class _Face:
    """The canvas and the head's geometry and tones that every feature of one face is drawn with."""

    img: np.ndarray
    cx: float
    cy: float
    a: float  # half width
    b: float  # half height
    skin: float
    dark: float  # brows, pupils, mouth interior
    hair: float


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x)), int(round(y))


def _ax(u: float, v: float) -> tuple[int, int]:
    return max(int(round(u)), 1), max(int(round(v)), 1)


def _render(expr: Expression, rng: np.random.Generator) -> np.ndarray:
    """Draw one frontal face at 4x resolution (float32 0..255). The random draws happen in a fixed order (head,
    eyes and brows, nose, mouth): the embedded dataset depends on it."""
    face = _head(rng)
    eye_y = _eyes_and_brows(face, expr, rng)
    _nose(face, expr, rng, eye_y)
    _mouth(face, expr, rng)
    return face.img


def _head(rng: np.random.Generator) -> _Face:
    s = _SCALE
    background = rng.uniform(20, 230)
    img = np.full((_CANVAS, _CANVAS), background, dtype=np.float32)
    skin = rng.uniform(80, 215)
    dark = skin * rng.uniform(0.2, 0.45)
    hair = rng.uniform(10, 200)
    # FER2013 faces fill the crop: eyes at ~40% height, mouth at ~75%, chin near the bottom edge.
    cx = _CANVAS / 2 + rng.normal(0, 1.5 * s)
    cy = _CANVAS * 0.53 + rng.normal(0, 1.5 * s)
    a = rng.uniform(17.5, 20.5) * s
    b = rng.uniform(22.0, 25.5) * s
    # Hair behind the head, then the face, then a hairline over the forehead.
    cv2.ellipse(img, _pt(cx, cy - 0.12 * b), _ax(a * 1.12, b * 1.02), 0, 0, 360, hair, -1, cv2.LINE_AA)
    cv2.ellipse(img, _pt(cx, cy), _ax(a, b), 0, 0, 360, skin, -1, cv2.LINE_AA)
    hairline = rng.uniform(0.55, 0.85)
    cv2.ellipse(img, _pt(cx, cy - b * 0.95), _ax(a * 1.02, b * (1.0 - hairline) + 2 * s), 0, 0, 360, hair, -1)
    return _Face(img, cx, cy, a, b, skin, dark, hair)


def _eyes_and_brows(f: _Face, expr: Expression, rng: np.random.Generator) -> float:
    """Both eyes and brows; returns the eyes' height."""
    s = _SCALE
    eye_y = f.cy - rng.uniform(0.17, 0.24) * f.b
    eye_dx = rng.uniform(0.36, 0.44) * f.a
    eye_w = rng.uniform(0.2, 0.25) * f.a
    for side in (-1, 1):
        ex = f.cx + side * eye_dx
        eh = max(eye_w * 0.42 * expr.eye_open, 0.6 * s)
        sclera = min(255.0, f.skin + rng.uniform(35, 60))
        cv2.ellipse(f.img, _pt(ex, eye_y), _ax(eye_w, eh), 0, 0, 360, sclera, -1, cv2.LINE_AA)
        iris_r = min(eh, eye_w * 0.5)
        cv2.circle(f.img, _pt(ex, eye_y), max(int(iris_r), 1), f.dark, -1, cv2.LINE_AA)
        cv2.ellipse(f.img, _pt(ex, eye_y), _ax(eye_w, eh), 0, 180, 360, f.dark, max(s // 2, 1), cv2.LINE_AA)

        # Brows: raise moves both ends; the inner end moves further when the inner brow lifts or pulls down.
        brow_y = eye_y - 0.2 * f.b - expr.brow_raise * 0.07 * f.b
        inner = (f.cx + side * (eye_dx - eye_w * 0.9), brow_y - expr.brow_inner * 0.065 * f.b)
        outer = (f.cx + side * (eye_dx + eye_w * 1.1), brow_y + expr.brow_inner * 0.02 * f.b)
        tone = f.hair * 0.5 + f.dark * 0.5
        cv2.line(f.img, _pt(*inner), _pt(*outer), tone, int(rng.uniform(1.2, 2.0) * s), cv2.LINE_AA)
    return eye_y


def _nose(f: _Face, expr: Expression, rng: np.random.Generator, eye_y: float) -> None:
    """A shaded ridge and nostrils; the wrinkle adds creases across the bridge and deepens the folds."""
    s, a, b, cx = _SCALE, f.a, f.b, f.cx
    nose_y = f.cy + rng.uniform(0.12, 0.18) * b
    cv2.line(f.img, _pt(cx, eye_y + 0.08 * b), _pt(cx - 0.04 * a, nose_y), f.skin * 0.7, s, cv2.LINE_AA)
    for side in (-1, 1):
        centre = _pt(cx + side * 0.1 * a, nose_y)
        cv2.ellipse(f.img, centre, _ax(0.06 * a, 0.03 * b), 0, 0, 360, f.dark, -1, cv2.LINE_AA)
    if expr.nose_wrinkle > 0.05:
        crease = f.skin - expr.nose_wrinkle * f.skin * 0.45
        for k in range(3):
            y = eye_y + (0.06 + 0.05 * k) * b
            w = 0.1 * a * (1 + 0.3 * expr.nose_wrinkle)
            cv2.line(f.img, _pt(cx - w, y), _pt(cx + w, y - 0.5 * s), crease, max(s // 2, 1), cv2.LINE_AA)
        for side in (-1, 1):  # nasolabial folds
            start = _pt(cx + side * 0.15 * a, nose_y)
            end = _pt(cx + side * 0.32 * a, nose_y + 0.22 * b)
            cv2.line(f.img, start, end, crease, max(s // 2, 1), cv2.LINE_AA)


def _mouth(f: _Face, expr: Expression, rng: np.random.Generator) -> None:
    """Upper and lower lip curves; curve bends the corners, open separates the lips."""
    b = f.b
    mouth_y = f.cy + rng.uniform(0.42, 0.5) * b
    half_w = rng.uniform(0.26, 0.32) * f.a * expr.mouth_width
    xs = np.linspace(-1.0, 1.0, 25)
    bend = -expr.mouth_curve * 0.12 * b * xs**2
    lift = expr.lip_raise * 0.07 * b * np.clip(1.0 - (xs + 0.35) ** 2 * 2.5, 0.0, None)  # left-of-centre bump
    upper = mouth_y + bend - lift - expr.mouth_open * 0.05 * b * (1 - xs**2)
    lower = mouth_y + bend + expr.mouth_open * 0.18 * b * (1 - xs**2)
    px = f.cx + xs * half_w
    if expr.mouth_open > 0.04 or expr.lip_raise > 0.1:
        polygon = np.concatenate([np.stack([px, upper], 1), np.stack([px[::-1], lower[::-1]], 1)])
        cv2.fillPoly(f.img, [np.round(polygon).astype(np.int32)], f.dark, cv2.LINE_AA)
    lip = f.skin * rng.uniform(0.45, 0.7)
    thickness = int(rng.uniform(0.7, 1.2) * _SCALE)
    for curve in (upper, lower):
        points = np.round(np.stack([px, curve], 1)).astype(np.int32)
        cv2.polylines(f.img, [points], False, lip, thickness, cv2.LINE_AA)


def _degrade(hi_res: np.ndarray, rng: np.random.Generator, cfg: GeneratorConfig) -> np.ndarray:
    """Pose, downsample, light, blur and add sensor noise; returns uint8 48x48."""
    angle = rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)
    scale = rng.uniform(*cfg.scale_range)
    center = (_CANVAS / 2, _CANVAS / 2)
    matrix = cv2.getRotationMatrix2D(center, angle, scale)
    matrix[:, 2] += rng.uniform(-cfg.max_shift_px, cfg.max_shift_px, size=2) * _SCALE
    border = float(np.median(hi_res[:, :4]))
    posed = cv2.warpAffine(hi_res, matrix, (_CANVAS, _CANVAS), flags=cv2.INTER_LINEAR, borderValue=border)
    img = cv2.resize(posed, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)

    theta = rng.uniform(0, 2 * np.pi)
    grid = np.linspace(-1.0, 1.0, IMAGE_SIZE, dtype=np.float32)
    ramp = np.cos(theta) * grid[None, :] + np.sin(theta) * grid[:, None]
    img = img * (1.0 + rng.uniform(0, cfg.max_light_gradient) * ramp)
    img = img * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)  # exposure and contrast
    sigma = rng.uniform(0, cfg.max_blur_sigma)
    if sigma > 0.2:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = img + rng.normal(0, rng.uniform(0, cfg.max_noise_sigma), size=img.shape)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def draw_face(label: str, rng: np.random.Generator, cfg: GeneratorConfig | None = None) -> np.ndarray:
    """Draw one 48x48 uint8 face showing `label` at a random intensity."""
    cfg = cfg or GeneratorConfig()
    intensity = rng.uniform(cfg.min_intensity, cfg.max_intensity)
    expr = expression_for(label, intensity, rng, cfg.expression_jitter)
    return _degrade(_render(expr, rng), rng, cfg)


def generate_faces(
    n: int, seed: int, cfg: GeneratorConfig | None = None, class_weights: dict[str, float] | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `n` (label index, 48x48 uint8 face) pairs; the same seed yields the same faces."""
    rng = np.random.default_rng(seed)
    weights = np.array([(class_weights or {}).get(label, 1.0) for label in LABELS], dtype=np.float64)
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("class weights must be non-negative and not all zero")
    # Exact per-class counts from the weights (largest remainder), shuffled: stable class balance at any n.
    quotas = weights / weights.sum() * n
    counts = np.floor(quotas).astype(int)
    for i in np.argsort(-(quotas - counts))[: n - counts.sum()]:
        counts[i] += 1
    labels = rng.permutation(np.repeat(np.arange(len(LABELS)), counts))
    for label_index in labels:
        yield int(label_index), draw_face(LABELS[label_index], rng, cfg)
