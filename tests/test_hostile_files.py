"""Hostile files: nothing a dataset holds stops or hangs a build.

Non-regular files (FIFOs, sockets, devices), symbolic link loops, dangling links, empty files,
unreadable paths, decompression bombs, non-image bytes and corrupt images of every format
Pillow writes are recorded with a reason a person understands, skipped, and counted in the
summary and the published index; the run goes on. Every call that could block (a decode, a
build over a FIFO) runs under a time guard, so a hang fails the test instead of the suite.
"""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import random
import shutil
import socket
import struct
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from faceaudit.demo import insightface_image, vectron_image
from faceaudit.errors import FaceAuditError, ImageTooLarge, UnreadableImage
from faceaudit.imaging import DecodedImage, decode_image
from faceaudit.indexer.build import BuildSummary, build_index
from faceaudit.indexer.readers.base import ByteLocation, UnreadableFile, read_location
from faceaudit.indexer.readers.manifest import ManifestSource
from faceaudit.indexer.store import ImageTable
from faceaudit.models.engine import FaceEngine
from tests.images import png_bomb

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")

# --- Time guard --------------------------------------------------------------------------------


class Guard:
    """Runs calls on one daemon thread and waits at most ``timeout`` seconds for each: a call
    that never returns fails the test instead of blocking the suite (and, the thread being a
    daemon, does not keep the interpreter from exiting either). signal.alarm could not do this:
    a handler runs only between bytecodes, never inside a C decoder stuck in a loop."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], Any] | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, daemon=True, name="hostile-guard")
        self._thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._results.put((True, job()))
            except BaseException as error:  # handed to the test's thread, which re-raises it
                self._results.put((False, error))

    def call(self, job: Callable[[], Any], *, timeout: float, what: str,
             on_timeout: Callable[[], None] | None = None) -> Any:
        self._jobs.put(job)
        try:
            ok, value = self._results.get(timeout=timeout)
        except queue.Empty:
            if on_timeout is not None:
                on_timeout()
            pytest.fail(f"{what} did not return within {timeout:g} s: it hangs", pytrace=False)
        if not ok:
            raise value
        return value

    def close(self) -> None:
        self._jobs.put(None)


@pytest.fixture()
def guard() -> Any:
    runner = Guard()
    yield runner
    runner.close()


# --- Mutation fuzz of decode_image ---------------------------------------------------------------

MUTANTS_PER_VARIANT = 400
MAX_SAMPLE_BYTES = 64 * 1024  # ICNS (every size up to 1024 px: ~430 KB) is left out: too slow
FUZZ_MAX_PIXELS = 4_000_000  # mutants may declare any size; keep what they decode small
PER_CALL_SECONDS = 5.0  # the slowest mutant here decodes in ~50 ms (a DDS)
HANG_SECONDS = 30.0
INTERESTING = (0x00, 0xFF, 0x7F, 0x80)

# The images each format is fuzzed from: every format Pillow can save here (in the first of
# these modes it accepts) and read back, plus compressed and other variants of some.
MODES = ("RGB", "RGBA", "P", "L", "1")
EXTRA_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    *(("TIFF", {"compression": c}) for c in ("tiff_lzw", "packbits", "tiff_deflate", "jpeg")),
    ("JPEG", {"progressive": True}),
    ("PNG", {"optimize": True}),
    ("WEBP", {"lossless": True}),
    ("TGA", {"compression": "tga_rle"}),
]
EXIF_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "AVIF")  # with an EXIF orientation (turned 90°)

# What Pillow 13 itself raised underneath decode_image over these mutants (found by calling
# Image.open/getexif/exif_transpose/convert directly on them): OSError (truncated data, decoder
# errors, "broken data stream"), UnidentifiedImageError, SyntaxError (PNG, WebP, AVIF chunks),
# ValueError (DDS, QOI, IM, PPM, SGI, "tile cannot extend outside image"), EOFError (SPIDER),
# DecompressionBombError/Warning (a flipped size field), RuntimeError (AVIF: "Failed to decode
# image: Missing or empty image item"), NotImplementedError (DDS: "Unknown pixel format
# flags"; BLP: BLPFormatError, its subclass), AttributeError (SPIDER: "'SpiderImageFile'
# object has no attribute 'stkoffset'", in longer runs), and, from a TIFF whose StripOffsets
# entry has a non-integer type (corrupt_tiff below), TypeError ("'str' object cannot be
# interpreted as an integer"). decode_image turns each into UnreadableImage or ImageTooLarge.


def _small_photo() -> Image.Image:
    """A 48x40 crop of a real photo (yaoming.jpg)."""
    with Image.open(vectron_image("yaoming.jpg")) as photo:
        return photo.convert("RGB").crop((90, 60, 138, 100))


def _encode(image: Image.Image, fmt: str, options: dict[str, Any]) -> bytes | None:
    """``image`` saved as ``fmt``, or None when Pillow cannot write it here (or not read back
    what it wrote: PDF, Palm, EPS without Ghostscript, stubs such as HDF5)."""
    for mode in MODES:
        buffer = io.BytesIO()
        try:
            image.convert(mode).save(buffer, fmt, **options)
            with Image.open(io.BytesIO(buffer.getvalue())) as back:
                back.load()
        except Exception:
            continue
        return buffer.getvalue()
    return None


def fuzz_samples() -> dict[str, bytes]:
    """name -> bytes of each variant Pillow writes here, small enough to fuzz quickly."""
    Image.init()
    image = _small_photo()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90° clockwise
    exif[0x010F] = "faceaudit"
    variants = [(fmt, {}) for fmt in sorted(Image.SAVE)] + EXTRA_VARIANTS
    variants += [(fmt, {"exif": exif}) for fmt in EXIF_FORMATS]
    samples = {}
    for fmt, options in variants:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # IM: removed in Pillow 15
            data = _encode(image, fmt, options)
        if data is None or len(data) > MAX_SAMPLE_BYTES:
            continue
        label = ",".join(f"{k}={'orientation6' if k == 'exif' else v}"
                         for k, v in options.items())
        samples[f"{fmt}[{label}]" if label else fmt] = data
    return samples


SAMPLES = fuzz_samples()


def _position(data: bytearray, rng: random.Random) -> int:
    """Where to mutate: headers and trailers (where sizes, offsets and types are) half the
    time, anywhere otherwise."""
    draw = rng.random()
    if draw < 0.5:
        return rng.randrange(min(len(data), 256))
    if draw < 0.6:
        return len(data) - 1 - rng.randrange(min(len(data), 64))
    return rng.randrange(len(data))


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    """``data`` with 1 to 3 mutations; and what they were, to reproduce a failure."""
    out = bytearray(data)
    done: list[str] = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if not out:
            break
        op = rng.randrange(6)
        at = _position(out, rng)
        if op == 0:
            bit = rng.randrange(8)
            out[at] ^= 1 << bit
            done.append(f"flip bit {bit} at {at}")
        elif op == 1:
            value = rng.choice(INTERESTING)
            out[at] = value
            done.append(f"byte {at} = {value:#04x}")
        elif op == 2:
            cut = rng.randrange(len(out))
            del out[cut:]
            done.append(f"truncate to {cut}")
        elif op == 3:
            end = min(len(out), at + rng.randint(1, 64))
            where = _position(out, rng)
            out[where:where] = out[at:end]
            done.append(f"copy [{at}:{end}] to {where}")
        elif op == 4:
            extra = bytes(rng.choice((*INTERESTING, rng.randrange(256)))
                          for _ in range(rng.randint(1, 8)))
            out[at:at] = extra
            done.append(f"insert {extra.hex()} at {at}")
        else:
            length = rng.randint(1, 16)
            del out[at:at + length]
            done.append(f"delete [{at}:{at + length}]")
    return bytes(out), done


def _decode_or_error(data: bytes, max_side: int | None) -> DecodedImage | FaceAuditError:
    try:
        return decode_image(data, max_pixels=FUZZ_MAX_PIXELS, max_side=max_side, name="x.img")
    except FaceAuditError as error:
        return error


def test_fuzz_covers_the_common_formats() -> None:
    written = {name.split("[")[0] for name in SAMPLES}
    assert {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "ICO", "PPM", "TGA"} <= written
    assert {"TIFF[compression=tiff_lzw]", "TIFF[compression=packbits]"} <= set(SAMPLES)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's on corrupt TIFF/EXIF metadata
@pytest.mark.filterwarnings("ignore:IM image format is deprecated:DeprecationWarning")
@pytest.mark.parametrize("variant", sorted(SAMPLES))
def test_decode_survives_mutants(variant: str, guard: Guard) -> None:
    """Every mutant decodes to an RGB image or raises FaceAuditError with a message; never
    anything else, never slowly."""
    original = SAMPLES[variant]
    rng = random.Random(f"hostile-{variant}")  # str seeds are stable across runs and platforms
    outcomes: Counter[str] = Counter()
    for number in range(MUTANTS_PER_VARIANT):
        data, how = mutate(original, rng)
        max_side = 32 if number % 2 else None  # also the JPEG draft + reduce path
        described = f"{variant} mutant #{number} ({'; '.join(how)}, max_side={max_side})"
        started = time.perf_counter()
        try:
            result = guard.call(lambda d=data, m=max_side: _decode_or_error(d, m),
                                timeout=HANG_SECONDS, what=f"decoding {described}")
        except Exception as error:
            pytest.fail(f"decode_image raised {type(error).__name__}: {error} on {described}; "
                        "only FaceAuditError may escape it")
        elapsed = time.perf_counter() - started
        assert elapsed < PER_CALL_SECONDS, f"{described} took {elapsed:.1f} s to decode"
        if isinstance(result, FaceAuditError):
            assert isinstance(result, (UnreadableImage, ImageTooLarge)), described
            assert result.message.strip() and str(result) == result.message, described
            outcomes[type(result).__name__] += 1
            continue
        assert isinstance(result, DecodedImage), described
        assert result.width > 0 and result.height > 0, described
        height, width = result.pixels.shape[:2]
        assert result.pixels.dtype == np.uint8 and result.pixels.shape == (height, width, 3)
        assert height > 0 and width > 0 and result.scale > 0, described
        if max_side:
            assert max(height, width) <= max_side, described
        outcomes["decoded"] += 1
    # The mutations break files, and not all of them: both paths are exercised.
    assert outcomes["UnreadableImage"] + outcomes["ImageTooLarge"] > 0, outcomes


def corrupt_tiff() -> bytes:
    """A TIFF whose StripOffsets entry claims type ASCII: Pillow opens it, then raises TypeError
    ("'str' object cannot be interpreted as an integer") when loading its pixels."""
    buffer = io.BytesIO()
    _small_photo().save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    assert data[:4] == b"II*\x00"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    for number in range(entries):
        at = ifd + 2 + 12 * number
        if struct.unpack_from("<H", data, at)[0] == 273:  # StripOffsets
            struct.pack_into("<H", data, at + 2, 2)  # type ASCII
            return bytes(data)
    raise AssertionError("Pillow wrote a TIFF without StripOffsets")


def test_corrupt_tiff_is_unreadable_image() -> None:
    data = corrupt_tiff()
    with Image.open(io.BytesIO(data)) as image:  # Pillow itself raises something unusual
        with pytest.raises(Exception) as raw:  # noqa: B017 - TypeError in Pillow 13
            image.load()
    with pytest.raises(UnreadableImage) as caught:
        decode_image(data, name="corrupt.tif")
    assert "corrupt.tif is corrupt" in caught.value.message
    assert type(raw.value).__name__ in caught.value.message  # e.g. "(TypeError: ...)"


# --- A build over a folder of hostile files ------------------------------------------------------


def _bind_socket(path: Path) -> bool:
    """A UNIX socket at ``path``; False when this system cannot make one there. The name is
    bound relative to its folder (socket paths are limited to ~107 bytes)."""
    if not hasattr(socket, "AF_UNIX"):
        return False
    cwd = os.getcwd()
    try:
        os.chdir(path.parent)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(path.name)
    except OSError:
        return False
    finally:
        os.chdir(cwd)
    return path.is_socket()


def _release_fifo(fifo: Path) -> Callable[[], None]:
    """Unblocks a reader stuck opening ``fifo`` (by opening it for writing), so that a build
    that hangs on it can end after the test has failed."""

    def release() -> None:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    return release


def _build(guard: Guard, source: Any, out: Path, engine: FaceEngine,
           fifo: Path | None = None) -> BuildSummary:
    summary = guard.call(
        lambda: build_index(source, out, engine, inference_workers=1),
        timeout=120, what=f"build_index of {source}",
        on_timeout=_release_fifo(fifo) if fifo else None,
    )
    assert isinstance(summary, BuildSummary)
    return summary


# ref -> words its recorded reason must hold (any one of them)
EXPECTED_REASONS = {
    "photo.jpg": ("FIFO",),
    "a.jpg": ("link loop",),
    "b.jpg": ("link loop",),
    "dangling.jpg": ("broken symbolic link",),
    "empty.jpg": ("empty",),
    "sock.png": ("socket",),
    "huge.png": ("pixels", "limit"),
    "noise.webp": ("not an image", "corrupt"),
    "notes.tif": ("not an image",),
    "corrupt.tif": ("corrupt",),
    "truncated.jpg": ("truncated",),
    "device.jpg": ("device",),
}


@needs_fifo
def test_build_records_every_hostile_file(tmp_path: Path, engine: FaceEngine,
                                          guard: Guard) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    shutil.copy(vectron_image("yaoming.jpg"), root / "yao.jpg")
    shutil.copy(insightface_image("Tom_Hanks_54745.png"), root / "hanks.png")
    os.mkfifo(root / "photo.jpg")
    os.symlink("b.jpg", root / "a.jpg")
    os.symlink("a.jpg", root / "b.jpg")
    os.symlink("nowhere.jpg", root / "dangling.jpg")
    (root / "empty.jpg").write_bytes(b"")
    (root / "huge.png").write_bytes(png_bomb())
    (root / "noise.webp").write_bytes(random.Random(7).randbytes(3000))
    (root / "notes.tif").write_text("These are notes about the photos, not a photo.\n")
    (root / "corrupt.tif").write_bytes(corrupt_tiff())
    jpeg = vectron_image("yaoming.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    expected = dict(EXPECTED_REASONS)
    if not _bind_socket(root / "sock.png"):
        del expected["sock.png"]  # no UNIX sockets here: the other files are still tested
    if Path("/dev/null").is_char_device():
        os.symlink("/dev/null", root / "device.jpg")  # a link to a character device
    else:
        del expected["device.jpg"]

    out = tmp_path / "index"
    summary = _build(guard, root, out, engine, fifo=root / "photo.jpg")

    failures = dict(summary.failures)
    assert set(failures) == set(expected), failures
    for ref, words in expected.items():
        reason = failures[ref]
        assert any(word in reason for word in words), f"{ref}: {reason!r}, expected {words}"
        assert len(reason) > 5 and "Traceback" not in reason, reason
    assert summary.failed == len(expected)
    assert summary.images == len(expected) + 2
    assert summary.images_with_faces == 2 and summary.faces >= 2
    assert sum(summary.failure_reasons.values()) == len(expected)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["failed"] == len(expected)
    assert manifest["counts"]["images"] == len(expected) + 2
    assert sum(manifest["failure_reasons"].values()) == len(expected)
    assert manifest["coverage"]["failed"] == len(expected)
    assert any("FIFO" in reason for reason in manifest["failure_reasons"])
    assert any("is corrupt" in reason for reason in manifest["failure_reasons"])

    records = {record.ref: record for record in ImageTable(out / "images.parquet")}
    assert set(records) == set(expected) | {"yao.jpg", "hanks.png"}
    for ref in expected:
        assert records[ref].status == "failed" and records[ref].error == failures[ref]
        assert records[ref].faces == 0 and not records[ref].retry, ref
    for ref in ("yao.jpg", "hanks.png"):
        assert records[ref].status == "ok" and records[ref].faces >= 1, ref


# --- Reading: unreadable paths and whether a retry may help ------------------------------------


def _unreadable(root: Path, path: str, **location: Any) -> UnreadableFile:
    with pytest.raises(UnreadableFile) as caught:
        read_location(root, ByteLocation(path, **location))
    assert str(caught.value)
    return caught.value


@needs_fifo
def test_read_location_refuses_what_is_not_a_readable_file(tmp_path: Path,
                                                           guard: Guard) -> None:
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "file.jpg").write_bytes(b"x" * 100)
    (tmp_path / "empty.jpg").write_bytes(b"")
    os.mkfifo(tmp_path / "fifo.jpg")
    os.symlink("loop2.jpg", tmp_path / "loop1.jpg")
    os.symlink("loop1.jpg", tmp_path / "loop2.jpg")

    folder = _unreadable(tmp_path, "folder.jpg")
    assert "folder" in str(folder) and not folder.transient
    # The parent is a file (ENOTDIR): as for a missing file, a later build may find it.
    not_dir = _unreadable(tmp_path, "file.jpg/photo.jpg")
    assert "Not a directory" in str(not_dir) and not_dir.transient
    missing = _unreadable(tmp_path, "gone.jpg")
    assert "does not exist" in str(missing) and missing.transient
    fifo = guard.call(lambda: _unreadable(tmp_path, "fifo.jpg"), timeout=10,
                      what="reading a FIFO", on_timeout=_release_fifo(tmp_path / "fifo.jpg"))
    assert "FIFO" in str(fifo) and not fifo.transient
    loop = _unreadable(tmp_path, "loop1.jpg")
    assert "link loop" in str(loop) and not loop.transient
    empty = _unreadable(tmp_path, "empty.jpg")
    assert "empty" in str(empty) and not empty.transient
    with pytest.raises(UnreadableFile) as caught:
        read_location(tmp_path, ByteLocation("file.jpg"), max_bytes=99)
    assert "limit" in str(caught.value) and not caught.value.transient
    # A tar member beyond the end of its file: the file changed while read; try again later.
    short = _unreadable(tmp_path, "file.jpg", offset=50, size=80)
    assert "shorter than expected" in str(short) and short.transient
    if Path("/dev/null").is_char_device():
        device = _unreadable(Path("/"), "dev/null")
        assert "character device" in str(device) and not device.transient
    if os.geteuid() != 0:  # root reads chmod-000 files
        locked = tmp_path / "locked.jpg"
        locked.write_bytes(b"x")
        locked.chmod(0)
        denied = _unreadable(tmp_path, "locked.jpg")
        assert "permission denied" in str(denied) and denied.transient


# --- A transient failure is retried by the next build ------------------------------------------


def test_missing_file_is_retried_by_the_next_build(tmp_path: Path, engine: FaceEngine,
                                                   guard: Guard) -> None:
    root = tmp_path / "dataset"
    root.mkdir()
    shutil.copy(vectron_image("yaoming.jpg"), root / "yao.jpg")
    manifest = root / "photos.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "title"])
        writer.writerow(["yao.jpg", "a portrait"])
        writer.writerow(["later.jpg", "not downloaded yet"])
    out = tmp_path / "index"

    first = _build(guard, ManifestSource(manifest), out, engine)
    assert [ref for ref, _ in first.failures] == ["later.jpg"]
    assert "does not exist" in first.failures[0][1] and first.failed == 1
    records = {record.ref: record for record in ImageTable(out / "images.parquet")}
    assert records["later.jpg"].status == "failed" and records["later.jpg"].retry
    assert records["yao.jpg"].status == "ok" and not records["yao.jpg"].retry

    shutil.copy(insightface_image("Tom_Hanks_54745.png"), root / "later.jpg")
    second = _build(guard, ManifestSource(manifest), out, engine)
    assert second.processed >= 1 and second.reused_images == 1
    assert second.failed == 0 and second.failures == []
    records = {record.ref: record for record in ImageTable(out / "images.parquet")}
    assert set(records) == {"yao.jpg", "later.jpg"}
    assert records["later.jpg"].status == "ok" and records["later.jpg"].faces >= 1
    assert not records["later.jpg"].retry
    assert json.loads((out / "manifest.json").read_text())["counts"]["failed"] == 0
