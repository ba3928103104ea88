"""The detection benchmark's images: real faces composed onto real backgrounds at known boxes, fixed seeds.

Faces come from photos that ship inside installed packages: skimage's `astronaut`, matplotlib's
`grace_hopper.jpg` (both with hand-measured face boxes and landmarks) and the first 100 images of skimage's
`lfw_subset` (25x25 face crops: the tile is the face box). Backgrounds are skimage photos without a face. Each
case draws a face, a random view of a background (scale, crop, mirror), a face width (5-60 % of the 640 px
canvas; LFW tiles, 25 px, only up to 20 %), an in-plane rotation (0, +-5-15 or +-20-30 degrees), a lighting
change (gain and gamma) and a JPEG quality. The ground-truth box of a rotated face is its upright box turned
about its centre, kept axis-aligned at the same size (a detector's box frames the face, not the rotated
square's hull).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

CANVAS = (480, 640)  # height, width: the 640x480 photo the goals are stated for
BACKGROUNDS = ("coffee", "rocket", "chelsea", "hubble_deep_field", "immunohistochemistry", "stereo_motorcycle")
CALIBRATION_BACKGROUNDS = ("brick", "grass", "gravel", "coins", "clock", "moon", "page", "text", "cell", "colorwheel")
LFW_FACES = 100  # lfw_subset(): 100 faces, then 100 non-faces


@dataclass(frozen=True)
class SourceFace:
    """A face photo (gray), its face box (x, y, w, h) and, where measured, five landmarks (x, y)."""

    name: str
    gray: np.ndarray
    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None = None  # 5 x 2: left eye, right eye, nose, left and right mouth corner


@dataclass(frozen=True)
class Case:
    """One benchmark image with its ground truth (no box: a background alone)."""

    gray: np.ndarray
    box: tuple[float, float, float, float] | None
    landmarks: np.ndarray | None
    source: str
    angle_deg: float
    face_fraction: float


def _gray(rgb: np.ndarray) -> np.ndarray:
    return rgb if rgb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2GRAY)


def source_faces() -> list[SourceFace]:
    """The two measured photos, then the LFW tiles."""
    from matplotlib.cbook import get_sample_data
    from skimage import data

    with Image.open(str(get_sample_data("grace_hopper.jpg", asfileobj=False))) as photo:
        hopper = np.asarray(photo.convert("RGB"))
    # Boxes brow/forehead to chin and cheek to cheek, landmarks at pupils, nose tip and mouth corners: measured
    # by eye on 3-5x enlargements with a 10 px grid.
    faces = [
        SourceFace("astronaut", _gray(data.astronaut()), (178, 64, 92, 106),
                   np.array([[203, 101], [246, 103.5], [225, 128], [205.5, 142], [244, 141]], float)),
        SourceFace("grace_hopper", _gray(hopper), (165, 140, 195, 185),
                   np.array([[221, 188], [303, 186], [263, 243], [230, 277], [298, 275]], float)),
    ]  # fmt: skip
    lfw = (data.lfw_subset()[:LFW_FACES] * 255).round().astype(np.uint8)
    faces += [SourceFace(f"lfw{i:03d}", tile, (0, 0, 25, 25)) for i, tile in enumerate(lfw)]
    return faces


def backgrounds(names: tuple[str, ...] = BACKGROUNDS) -> list[np.ndarray]:
    """Each background photo in gray, uint8, at its own size."""
    from skimage import data

    out = []
    for name in names:
        photo = getattr(data, name)()
        gray = _gray(np.asarray(photo[0] if isinstance(photo, tuple) else photo))  # stereo pairs: the left view
        out.append(gray if gray.dtype == np.uint8 else (gray * 255 / max(1, gray.max())).astype(np.uint8))
    return out


def canvas(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random view of a background: scaled to cover the canvas (1-1.6x more), cropped anywhere, maybe mirrored."""
    h, w = photo.shape
    f = max(CANVAS[0] / h, CANVAS[1] / w) * rng.uniform(1.0, 1.6)
    big = cv2.resize(photo, (max(CANVAS[1], round(w * f)), max(CANVAS[0], round(h * f))), interpolation=cv2.INTER_AREA)
    y, x = int(rng.integers(big.shape[0] - CANVAS[0] + 1)), int(rng.integers(big.shape[1] - CANVAS[1] + 1))
    view = big[y : y + CANVAS[0], x : x + CANVAS[1]]
    return np.ascontiguousarray(view[:, ::-1] if rng.random() < 0.5 else view)


def finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting (gain and gamma) and a JPEG round trip at a drawn quality."""
    gain, gamma = rng.uniform(0.6, 1.3), float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    image = 255.0 * np.clip(gain * image.astype(np.float32) / 255.0, 0, 1) ** gamma
    buffer = io.BytesIO()
    Image.fromarray(image.round().astype(np.uint8)).save(buffer, format="JPEG", quality=int(rng.integers(30, 96)))
    return np.asarray(Image.open(buffer).convert("L"))


def _mask(face: SourceFace) -> np.ndarray:
    """Soft elliptical mask over the head (photos) or the tile (LFW), so no hard paste edge is left."""
    h, w = face.gray.shape
    mask = np.zeros((h, w), np.float32)
    if face.name.startswith("lfw"):
        mask[1:-1, 1:-1] = 1.0
        return cv2.GaussianBlur(mask, (3, 3), 0)
    x, y, bw, bh = face.box
    cv2.ellipse(mask, (round(x + bw / 2), round(y + bh * 0.45)), (round(bw * 0.75), round(bh * 0.9)), 0, 0, 360, 1, -1)
    return cv2.GaussianBlur(mask, (0, 0), bw * 0.05)


def place(
    face: SourceFace, background: np.ndarray, angle_deg: float, fraction: float, centre: tuple[float, float]
) -> Case:
    """`face` turned by `angle_deg`, `fraction` of the canvas wide, centred at `centre` on `background`."""
    x, y, w, h = face.box
    scale = fraction * CANVAS[1] / w
    matrix = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), angle_deg, scale)
    matrix[:, 2] += (centre[0] - (x + w / 2), centre[1] - (y + h / 2))
    size = (CANVAS[1], CANVAS[0])
    pasted = cv2.warpAffine(face.gray, matrix, size, flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(_mask(face), matrix, size, flags=cv2.INTER_LINEAR)
    image = alpha * pasted.astype(np.float32) + (1 - alpha) * background.astype(np.float32)
    box = (centre[0] - w * scale / 2, centre[1] - h * scale / 2, w * scale, h * scale)
    points = None if face.landmarks is None else np.hstack([face.landmarks, np.ones((5, 1))]) @ matrix.T
    return Case(image.round().astype(np.uint8), box, points, face.name, angle_deg, fraction)


def compose(face: SourceFace, background: np.ndarray, rng: np.random.Generator, angle_deg: float) -> Case:
    """`face` turned by `angle_deg` at a drawn size and place, then a drawn lighting change and JPEG quality."""
    top_fraction = 0.2 if face.name.startswith("lfw") else 0.6
    fraction = float(np.exp(rng.uniform(np.log(0.05), np.log(top_fraction))))
    half = 0.5 * np.hypot(face.box[2], face.box[3]) * fraction * CANVAS[1] / face.box[2]  # stays inside the canvas
    cx = rng.uniform(half, CANVAS[1] - half) if CANVAS[1] > 2 * half else CANVAS[1] / 2
    cy = rng.uniform(half, CANVAS[0] - half) if CANVAS[0] > 2 * half else CANVAS[0] / 2
    case = place(face, background, angle_deg, fraction, (cx, cy))
    return Case(finish(case.gray, rng), case.box, case.landmarks, case.source, angle_deg, fraction)


def cases(n_faces: int, seed: int = 0, calibration: bool = False, views: int = 4) -> list[Case]:
    """`n_faces` composites (a third each upright, mildly and strongly tilted), then `views` of each background.

    The calibration set uses other seeds and other backgrounds than the benchmark's, the same faces.
    """
    rng = np.random.default_rng(seed + (1000 if calibration else 0))
    faces = source_faces()
    grounds = backgrounds(CALIBRATION_BACKGROUNDS if calibration else BACKGROUNDS)
    out = []
    for i in range(n_faces):
        # The measured photos appear in one case of four; the LFW tiles in turn in the others.
        face = faces[i % 2] if i % 4 == 0 else faces[2 + (i * 7) % LFW_FACES]
        kind = i % 3
        magnitude = 0.0 if kind == 0 else rng.uniform(5, 15) if kind == 1 else rng.uniform(20, 30)
        angle = float(magnitude * rng.choice([-1.0, 1.0]))
        out.append(compose(face, canvas(grounds[int(rng.integers(len(grounds)))], rng), rng, angle))
    for ground in grounds:
        for _ in range(views):
            out.append(Case(finish(canvas(ground, rng), rng), None, None, "background", 0.0, 0.0))
    return out
