"""The project's label space and the explicit mappings from each source's codes to it."""

from __future__ import annotations

# The project's label order. Every model carries it; every loader maps its source onto it.
LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
LABEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(LABELS)}

# fer2013.csv numbers its classes differently: 4 is Sad, 5 Surprise and 6 Neutral.
# Mapping by position instead of by name silently mislabels half of the data.
FER2013_CODE_TO_LABEL: dict[int, str] = {
    0: "angry",
    1: "disgust",
    2: "fear",
    3: "happy",
    4: "sad",
    5: "surprise",
    6: "neutral",
}
LABEL_TO_FER2013_CODE: dict[str, int] = {label: code for code, label in FER2013_CODE_TO_LABEL.items()}

# FER2013's Usage column names the three splits.
FER2013_USAGE_TO_SPLIT: dict[str, str] = {
    "Training": "train",
    "PublicTest": "validation",
    "PrivateTest": "test",
}
SPLIT_TO_FER2013_USAGE: dict[str, str] = {split: usage for usage, split in FER2013_USAGE_TO_SPLIT.items()}
SPLITS: tuple[str, ...] = ("train", "validation", "test")

IMAGE_SIZE = 48  # FER2013's faces; a network with another input size gets them resized (ingest.resize_faces)
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
# FER2013's registration as the gateway reproduces it for models trained on this project's tables: the detector's
# face box squared and widened by this fraction of its size on every side (brows-to-chin Haar box -> FER crop).
FER2013_CROP_MARGIN = 0.1


def fer2013_code_to_index(code: int) -> int:
    """Return the project label index of a fer2013.csv emotion code; KeyError if the code is unknown."""
    return LABEL_INDEX[FER2013_CODE_TO_LABEL[code]]
