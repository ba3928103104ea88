"""Image decoding with hard limits, and the one function that turns a face region into a model input.

Everything happens in memory: the uploaded bytes are decoded here and never written anywhere.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from gateway.errors import BadInputError, PayloadTooLargeError, UnsupportedImageError

ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP")  # MPO: multi-picture JPEG (many cameras, HDR gain maps)
MAX_ASPECT_RATIO = 20.0  # no photo or face crop is longer than this on one side; such strips only cost memory

# EXIF orientation -> the transpose that makes the image upright (read directly: Pillow's exif_transpose
# also rewrites the EXIF block and raises on malformed tags the upright pixels do not depend on).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# FER2013 faces were registered by a face detector and cropped a little wider than its box. Haar boxes span
# brows to chin; widening by this fraction on every side gives the forehead and jaw FER crops show. A served
# model whose weights expect another registration names its own margin (metadata input.crop_margin).
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
        if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
            raise BadInputError(
                f"the image is {width}x{height}, longer than {MAX_ASPECT_RATIO:g}:1 on one side; "
                "send a photo or a face crop"
            )
        try:
            image.load()
            return _to_gray(_upright(image))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise BadInputError(f"the {image.format} image is corrupt or truncated") from e


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; an unreadable EXIF block leaves the image as stored."""
    try:
        orientation = int(image.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - malformed EXIF comes in many shapes (struct, type, value errors)
        orientation = 1
    method = _ORIENTATION.get(orientation)
    return image.transpose(method) if method is not None else image


def _to_gray(image: Image.Image) -> np.ndarray:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit or float grayscale: Pillow's convert("L") clips to 255; scale the value range instead (float32:
        # a 40 MP image costs 160 MB here, not 320).
        values = np.asarray(image, dtype=np.float32)
        top = np.float32(65535.0 if values.max() > 255 else 255.0)
        values *= np.float32(255.0) / top
        np.clip(np.rint(values, out=values), 0, 255, out=values)
        return values.astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels over white, as a browser shows them, not over their hidden colour.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def crop_to_fer(gray: np.ndarray, box: Box, size: tuple[int, int], margin: float = FER_MARGIN) -> np.ndarray:
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
    # Only the crop is padded (by what lies outside the image on each side), never the whole image.
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, img_w), min(y1, img_h)
    if ix1 <= ix0 or iy1 <= iy0:
        raise BadInputError(f"face box {box} lies outside the {img_w}x{img_h} image")
    crop = gray[iy0:iy1, ix0:ix1]
    work = 4 * max(size)  # an intermediate resolution well above the output's
    if (x1 - x0) > work and (x1 - x0) ** 2 > 2 * crop.size:
        # Mostly padding (a long image sent as a face crop): shrink what is inside first, then pad the small
        # result, so the padded square never exists at full size (28000x1400 would make it 780 MB).
        f = work / (x1 - x0)
        inner_w, inner_h = max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))
        crop = cv2.resize(crop, (inner_w, inner_h), interpolation=cv2.INTER_AREA)
        left, top = min(round((ix0 - x0) * f), work - inner_w), min(round((iy0 - y0) * f), work - inner_h)
        crop = cv2.copyMakeBorder(crop, top, work - inner_h - top, left, work - inner_w - left, cv2.BORDER_REPLICATE)
    elif (ix0, iy0, ix1, iy1) != (x0, y0, x1, y1):
        crop = cv2.copyMakeBorder(crop, iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1, cv2.BORDER_REPLICATE)
    shrinking = crop.shape[0] > size[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(crop, (size[1], size[0]), interpolation=interpolation)


def whole_image_box(gray: np.ndarray) -> Box:
    """The box of an image that already is a face crop."""
    return (0, 0, int(gray.shape[1]), int(gray.shape[0]))
