"""Decoding: orientation, formats, and every way a file can be bad."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from faceaudit.errors import ImageTooLarge, UnreadableImage
from faceaudit.imaging import decode_image


def _jpeg(image: Image.Image, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


def _landscape() -> Image.Image:
    pixels = np.zeros((60, 100, 3), np.uint8)
    pixels[:, :50] = (255, 0, 0)  # left half red
    return Image.fromarray(pixels)


def test_exif_orientation_is_applied() -> None:
    stored = _landscape().transpose(Image.Transpose.ROTATE_90)  # stored turned left, 60x100
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to display"
    decoded = decode_image(_jpeg(stored, exif=exif))
    assert (decoded.width, decoded.height) == (100, 60)
    assert decoded.pixels.shape == (60, 100, 3)
    assert decoded.pixels[30, 10, 0] > 200 and decoded.pixels[30, 90, 0] < 50


def test_formats_and_first_frame() -> None:
    for fmt in ("PNG", "WEBP", "BMP", "TIFF"):
        buffer = io.BytesIO()
        _landscape().save(buffer, fmt)
        assert decode_image(buffer.getvalue()).pixels.shape == (60, 100, 3)
    frames = [_landscape(), Image.new("RGB", (100, 60), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buffer.getvalue()).pixels[30, 10, 0] > 200


def test_max_side_reduces_and_reports_scale() -> None:
    decoded = decode_image(_jpeg(Image.new("RGB", (800, 400), (9, 9, 9))), max_side=200)
    assert (decoded.width, decoded.height) == (800, 400)
    assert max(decoded.pixels.shape[:2]) == 200
    assert decoded.scale == pytest.approx(0.25)


def test_not_an_image() -> None:
    with pytest.raises(UnreadableImage, match="not an image"):
        decode_image(b"hello, this is text")
    with pytest.raises(UnreadableImage):
        decode_image(b"")


def test_truncated_jpeg() -> None:
    data = _jpeg(Image.effect_noise((256, 256), 64).convert("RGB"))
    with pytest.raises(UnreadableImage, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


def _png_header_claiming(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def test_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image(_png_header_claiming(100_000, 100_000))
    with pytest.raises(ImageTooLarge, match="limit of 1,000 pixels"):
        decode_image(_jpeg(_landscape()), max_pixels=1000)
