"""Decode photos the same way everywhere: EXIF orientation applied, RGB, size limits enforced."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from faceaudit.errors import ImageTooLarge, UnreadableImage

try:  # HEIC/HEIF photos from phones, when the optional extra is installed.
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - depends on the optional extra
    pass

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
)
DEFAULT_MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB photo. ``width``/``height`` are of the full-size upright photo; ``pixels``
    may be smaller (``scale`` = pixels side / full side) when it was decoded reduced."""

    pixels: NDArray[np.uint8]
    width: int
    height: int
    scale: float = 1.0


def decode_image(
    source: bytes | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    name: str | None = None,
) -> DecodedImage:
    """Decode ``source`` (file path or bytes), apply EXIF orientation, return RGB pixels.

    ``max_pixels`` refuses decompression bombs before any pixel is decoded. ``max_side`` lets
    JPEG decoding skip work (DCT scaling) when a smaller image is all the caller needs; the
    result is then reduced so its longer side is at most ``max_side``. ``name`` is how error
    messages call the image (default: the path, or "The uploaded file" for bytes).
    """
    if name is None:
        name = str(source) if isinstance(source, Path) else "The uploaded file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            stream = io.BytesIO(source) if isinstance(source, bytes) else source
            with Image.open(stream) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageTooLarge(
                        f"{name} is {width}x{height} pixels, more than the limit of "
                        f"{max_pixels:,} pixels; use a smaller photo."
                    )
                orientation = image.getexif().get(0x0112, 1)
                if max_side and image.format == "JPEG" and max(width, height) > max_side:
                    image.draft("RGB", (max_side, max_side))
                image.seek(0)  # first frame of animated GIF/WebP/TIFF
                upright = ImageOps.exif_transpose(image) if orientation != 1 else image
                rgb = upright.convert("RGB")
    except ImageTooLarge:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLarge(f"{name} was refused as a decompression bomb: {error}") from error
    except UnidentifiedImageError as error:
        raise UnreadableImage(
            f"{name} is not an image in a known format (JPEG, PNG, WebP, GIF, BMP, TIFF)."
        ) from error
    except FileNotFoundError as error:
        raise UnreadableImage(f"{name} does not exist.") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UnreadableImage(f"{name} is corrupt or truncated: {error}") from error
    except MemoryError as error:
        raise ImageTooLarge(f"{name} needs more memory to decode than is available.") from error
    except Exception as error:  # a corrupt file can make a decoder raise anything
        raise UnreadableImage(
            f"{name} is corrupt: decoding it failed ({type(error).__name__}: {error})."
        ) from error
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if max_side and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    pixels = np.asarray(rgb, dtype=np.uint8)
    return DecodedImage(pixels=pixels, width=width, height=height, scale=rgb.size[0] / width)
