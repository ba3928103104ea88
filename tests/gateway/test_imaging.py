from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from gateway.errors import BadInputError, PayloadTooLargeError, UnsupportedImageError
from gateway.imaging import crop_to_fer, decode_grayscale, whole_image_box

MAX_PIXELS = 4_000_000


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def gradient(width: int = 64, height: int = 40) -> Image.Image:
    values = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    return Image.fromarray(values, mode="L")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_accepted_formats_decode_to_grayscale(fmt: str) -> None:
    gray = decode_grayscale(encode(gradient().convert("RGB"), fmt), MAX_PIXELS)
    assert gray.shape == (40, 64) and gray.dtype == np.uint8
    assert gray[:, 0].mean() < 30 and gray[:, -1].mean() > 225


def test_exif_orientation_is_honoured() -> None:
    image = gradient(64, 40).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    gray = decode_grayscale(encode(image, "JPEG", exif=exif), MAX_PIXELS)
    assert gray.shape == (64, 40)  # upright: the stored landscape image is displayed as portrait


def test_sixteen_bit_png_keeps_its_contrast() -> None:
    values = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (8, 1))
    gray = decode_grayscale(encode(Image.fromarray(values), "PNG"), MAX_PIXELS)
    assert gray[:, 0].max() < 10 and gray[:, -1].min() > 245 and 100 < gray[:, 16].mean() < 160


def test_transparent_pixels_are_shown_over_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    gray = decode_grayscale(encode(rgba, "PNG"), MAX_PIXELS)
    assert (gray == 255).all()
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 0] * 256)
    gray = decode_grayscale(encode(palette, "PNG", transparency=0), MAX_PIXELS)
    assert (gray == 255).all()


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", BadInputError, "empty"),
        (b"<html><body>not an image</body></html>", UnsupportedImageError, "not a readable"),
        (encode(gradient(), "GIF"), UnsupportedImageError, "GIF"),
        (encode(gradient(), "BMP"), UnsupportedImageError, "BMP"),
        (encode(gradient(400, 300).convert("RGB"), "JPEG")[:600], BadInputError, "corrupt or truncated"),
        (encode(gradient(400, 300), "PNG")[:200], BadInputError, "corrupt or truncated"),
    ],
)
def test_bad_images_get_clear_4xx_errors(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        decode_grayscale(data, MAX_PIXELS)


def test_pixel_limit_is_checked_before_decoding() -> None:
    # A small file that declares 30000 x 30000 pixels: refused from its header alone.
    header = encode(Image.new("1", (30000, 30000)), "PNG")
    assert len(header) < 200_000
    with pytest.raises(PayloadTooLargeError, match="pixels"):
        decode_grayscale(header, MAX_PIXELS)


def test_crop_of_a_whole_face_image_is_a_plain_resize() -> None:
    face = np.random.default_rng(0).integers(0, 256, (96, 96), dtype=np.uint8)
    crop = crop_to_fer(face, whole_image_box(face), (48, 48), margin=0.0)
    assert crop.shape == (48, 48)
    assert abs(float(crop.mean()) - float(face.mean())) < 2


def test_crop_is_centred_on_the_box_and_squared() -> None:
    image = np.zeros((200, 300), dtype=np.uint8)
    image[80:120, 130:170] = 255  # a bright 40x40 "face" centred at (150, 100)
    crop = crop_to_fer(image, (130, 80, 40, 40), (48, 48), margin=0.0)
    assert crop.mean() > 250
    wider = crop_to_fer(image, (130, 80, 40, 40), (48, 48), margin=0.25)
    assert wider[0].mean() < 5 and wider[24, 24] == 255  # border shows background, centre the face


def test_crop_at_the_image_edge_is_padded_not_shifted() -> None:
    image = np.full((50, 50), 100, dtype=np.uint8)
    assert crop_to_fer(image, (0, 0, 30, 30), (48, 48), margin=0.5).shape == (48, 48)


def test_empty_box_is_refused() -> None:
    with pytest.raises(BadInputError):
        crop_to_fer(np.zeros((10, 10), np.uint8), (0, 0, 0, 5), (48, 48))


def test_malformed_exif_keeps_the_orientation_and_is_no_error() -> None:
    """Orientation 6 plus a TransferFunction stored as ASCII: Pillow's exif_transpose raises struct.error."""
    entries = [(0x0112, 3, 1, struct.pack("<HH", 6, 0)), (0x012D, 2, 4, b"abc\x00")]
    packed = b"".join(struct.pack("<HHI", tag, kind, count) + value for tag, kind, count, value in entries)
    ifd = struct.pack("<H", len(entries)) + packed + struct.pack("<I", 0)
    raw = b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd
    gray = decode_grayscale(encode(gradient(64, 40).convert("RGB"), "JPEG", exif=raw), MAX_PIXELS)
    assert gray.shape == (64, 40)


@pytest.mark.parametrize("size", [(5000, 1), (1, 5000), (2000, 99)])
def test_strips_are_refused_before_decoding(size: tuple[int, int]) -> None:
    with pytest.raises(BadInputError, match="longer than 20:1"):
        decode_grayscale(encode(Image.new("L", size, 128), "PNG"), MAX_PIXELS)
    assert decode_grayscale(encode(Image.new("L", (2000, 100), 128), "PNG"), MAX_PIXELS).shape == (100, 2000)


def test_multi_picture_jpeg_is_a_jpeg() -> None:
    first, second = gradient().convert("RGB"), Image.new("RGB", (64, 40), (0, 0, 0))
    data = encode(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    gray = decode_grayscale(data, MAX_PIXELS)
    assert gray.shape == (40, 64) and gray[:, -1].mean() > 225  # the primary picture


def test_crop_pads_only_the_crop_as_padding_the_whole_image_would() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 90), dtype=np.uint8)
    for box in [(0, 0, 30, 30), (70, 45, 20, 15), (10, 20, 30, 40), (0, 0, 90, 60)]:
        x, y, w, h = box
        side = max(w, h) * 1.2
        x0, y0 = round(x + w / 2 - side / 2), round(y + h / 2 - side / 2)
        pad = max(0, -x0, -y0, x0 + round(side) - 90, y0 + round(side) - 60)
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        crop = padded[y0 + pad : y0 + pad + round(side), x0 + pad : x0 + pad + round(side)]
        interpolation = cv2.INTER_AREA if crop.shape[0] > 48 else cv2.INTER_LINEAR
        expected = cv2.resize(crop, (48, 48), interpolation=interpolation)
        assert np.array_equal(crop_to_fer(image, box, (48, 48)), expected), box


def test_a_long_image_as_a_face_crop_never_builds_the_padded_square() -> None:
    import tracemalloc

    rows = np.linspace(0, 255, 400, dtype=np.float64)[:, None] * np.ones((1, 8000))
    image = np.ascontiguousarray(rows.astype(np.uint8))  # 3.2 MB; padded to a square it would be 64 MB
    tracemalloc.start()
    try:
        face = crop_to_fer(image, whole_image_box(image), (48, 48), margin=0.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert face.shape == (48, 48) and peak < 8_000_000
    # Nearly the picture the full-size padded square gives: the band with its edges replicated (shrinking first
    # blends the extreme edge rows a little: 12 grey levels here).
    padded = cv2.copyMakeBorder(image, 3800, 3800, 0, 0, cv2.BORDER_REPLICATE)
    exact = cv2.resize(padded, (48, 48), interpolation=cv2.INTER_AREA)
    assert np.abs(face.astype(int) - exact.astype(int)).max() <= 16
