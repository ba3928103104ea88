"""`emotorch samples DIR`: sample photos for the README's examples, from images inside installed packages.

Nothing is downloaded: the photos ship with scikit-image and matplotlib (both project dependencies).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image

# The astronaut's face in skimage's portrait (x, y, w, h: what OpenCV's frontal cascade finds), widened to a
# square close-up the way FER2013 faces are framed: the input for `mode=face`.
ASTRONAUT_FACE_BOX = (177, 66, 95, 95)
CLOSE_UP_MARGIN = 0.25


def _astronaut() -> np.ndarray:
    import skimage.data

    return np.asarray(skimage.data.astronaut())


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as photo:
        return np.asarray(photo.convert("RGB"))


def _coffee() -> np.ndarray:
    import skimage.data

    return np.asarray(skimage.data.coffee())


def close_up(photo: np.ndarray, box: tuple[int, int, int, int], margin: float) -> np.ndarray:
    """A square crop around `box`, widened by `margin` of its side on every side, clipped to the photo."""
    x, y, w, h = box
    side = round(max(w, h) * (1 + 2 * margin))
    x0, y0 = max(round(x + w / 2 - side / 2), 0), max(round(y + h / 2 - side / 2), 0)
    return photo[y0 : y0 + side, x0 : x0 + side]


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two photos on one canvas (the right one scaled to the left one's height), to show several faces."""
    height = left.shape[0]
    width = round(right.shape[1] * height / right.shape[0])
    scaled = np.asarray(Image.fromarray(right).resize((width, height), Image.Resampling.LANCZOS))
    return np.concatenate([left, scaled], axis=1)


SAMPLES: dict[str, tuple[str, Callable[[], np.ndarray]]] = {
    "selfie.jpg": ("skimage's astronaut portrait (Eileen Collins, NASA, public domain)", _astronaut),
    "face.jpg": ("a close-up of that face, for mode=face", lambda: close_up(_astronaut(), ASTRONAUT_FACE_BOX,
                                                                            CLOSE_UP_MARGIN)),
    "two-people.jpg": ("the astronaut beside matplotlib's Grace Hopper portrait (US Navy, public domain)",
                       lambda: side_by_side(_astronaut(), _grace_hopper())),
    "coffee.jpg": ("skimage's cup of coffee (Rachel Michetti, CC0): a photo without a face", _coffee),
}  # fmt: skip


def write_samples(folder: Path, out: TextIO) -> list[Path]:
    """Write every sample photo into `folder` as JPEG; one line per file on `out`."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (what, make) in SAMPLES.items():
        path = folder / name
        Image.fromarray(make()).save(path, quality=92)
        out.write(f"{path}: {what}\n")
        written.append(path)
    return written
