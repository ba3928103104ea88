"""Image decoding with hard limits, and the one function that turns a face region into a model input.

Everything happens in memory: the uploaded bytes are decoded here and never written anywhere.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gateway.errors import BadInputError, PayloadTooLargeError, UnsupportedImageError

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")

# FER2013 faces were registered by a face detector and cropped a little wider than its box. Haar boxes span
# brows to chin; widening by this fraction on every side gives the forehead and jaw FER crops show.
FER_MARGIN = 0.1

Box = tuple[int, int, int, int]  # x, y, width, height in pixels of the decoded image


def decode_grayscale(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode JPEG/PNG/WebP bytes to an upright uint8 grayscale array (H x W); 4xx errors for bad input."""
    if not data:
        raise BadInputError("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as e:
        raise UnsupportedImageError("the file is not a readable JPEG, PNG or WebP image") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PayloadTooLargeError(f"the image declares too many pixels (limit {max_pixels})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise BadInputError("the image is corrupt or truncated") from e
    with image:
        if image.format not in ACCEPTED_FORMATS:
            raise UnsupportedImageError(f"{image.format} images are not accepted; send JPEG, PNG or WebP")
        width, height = image.size
        if width * height > max_pixels:
            raise PayloadTooLargeError(
                f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
            )
        if width < 1 or height < 1:
            raise BadInputError("the image has no pixels")
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return _to_gray(upright)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise BadInputError(f"the {image.format} image is corrupt or truncated") from e


def _to_gray(image: Image.Image) -> np.ndarray:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit or float grayscale: Pillow's convert("L") clips to 255; scale the value range instead.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        return np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels over white, as a browser shows them, not over their hidden colour.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def crop_to_fer(gray: np.ndarray, box: Box, size: tuple[int, int] = (48, 48), margin: float = FER_MARGIN) -> np.ndarray:
    """Crop a face the way FER2013 faces were registered and resize it to `size` (height, width).

    The box is widened by `margin` of its size on every side and squared around its centre (FER crops are
    square, face centred); parts outside the image are filled by replicating the border. Area interpolation
    when shrinking (no aliasing), linear when enlarging. Returns uint8 `size`.
    """
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise BadInputError(f"empty face box {box}")
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    x1, y1 = x0 + int(round(side)), y0 + int(round(side))
    img_h, img_w = gray.shape
    pad = max(0, -x0, -y0, x1 - img_w, y1 - img_h)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    crop = gray[y0:y1, x0:x1]
    shrinking = crop.shape[0] > size[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(crop, (size[1], size[0]), interpolation=interpolation)


def whole_image_box(gray: np.ndarray) -> Box:
    """The box of an image that already is a face crop."""
    return (0, 0, int(gray.shape[1]), int(gray.shape[0]))
