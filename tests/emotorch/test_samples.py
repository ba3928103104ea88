"""`emotorch samples`: the README's photos, written from images inside installed packages."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from emotorch.cli import main
from emotorch.samples import close_up


def _faces(path: Path) -> int:
    """Faces OpenCV's frontal Haar cascade finds in a photo (independent of the gateway's MTCNN)."""
    gray = cv2.cvtColor(np.asarray(Image.open(path).convert("RGB")), cv2.COLOR_RGB2GRAY)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    return len(cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(60, 60)))


def test_samples_writes_the_readme_photos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["samples", str(tmp_path / "photos")]) == 0
    folder = tmp_path / "photos"
    assert sorted(p.name for p in folder.iterdir()) == ["coffee.jpg", "face.jpg", "selfie.jpg", "two-people.jpg"]
    assert capsys.readouterr().out.count("\n") == 4  # one line per file, saying what it is
    for path in folder.iterdir():
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
    faces = {name: _faces(folder / name) for name in ("selfie.jpg", "two-people.jpg", "coffee.jpg")}
    assert faces == {"selfie.jpg": 1, "two-people.jpg": 2, "coffee.jpg": 0}
    with Image.open(folder / "face.jpg") as face:
        assert face.width == face.height and 120 <= face.width <= 160  # a close-up: the face fills the frame


def test_close_up_is_square_and_clipped_to_the_photo() -> None:
    photo = np.arange(100 * 80).reshape(100, 80)
    assert close_up(photo, (30, 40, 20, 20), 0.5).shape == (40, 40)
    corner = close_up(photo, (0, 0, 20, 10), 0.5)  # widened past the top-left corner: starts at it
    assert corner.shape == (40, 40) and corner[0, 0] == photo[0, 0]
    assert close_up(photo, (70, 90, 10, 10), 0.5).shape == (15, 15)  # past the bottom-right: cut there
