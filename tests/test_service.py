"""The HTTP service through its real entry points: the app's lifespan, and one uvicorn server."""

from __future__ import annotations

import base64
import builtins
import hashlib
import io
import json
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import starlette.formparsers
import uvicorn
from fastapi import FastAPI, UploadFile
from fastapi.testclient import TestClient
from PIL import Image

from faceaudit.errors import IncompatibleIndex
from faceaudit.imaging import decode_image
from faceaudit.indexer.readers.base import PROVENANCE_FIELDS
from faceaudit.indexer.results import GUIDE_THRESHOLDS
from faceaudit.indexer.search import FaceIndex, search_selfie
from faceaudit.indexer.store import ImageRecord
from faceaudit.models.calibration import Calibration
from faceaudit.models.engine import FaceEngine
from faceaudit.models.thresholds import UNCALIBRATED_THRESHOLD
from faceaudit.service.app import create_app
from faceaudit.service.settings import ServiceSettings
from faceaudit.service.thumbnails import (
    FACE_SIZE,
    PhotoUnavailable,
    ThumbnailNotFound,
    ThumbnailTokens,
    View,
    face_square,
    photo_bytes,
    render_face,
)
from faceaudit.service.uploads import (
    MAX_PARTS,
    EmptyUpload,
    MalformedUpload,
    MissingField,
    NotMultipart,
    UploadTooLarge,
    file_field,
    read_multipart,
)
from tests import expected_strangers as expected
from tests.images import png_bomb
from tests.photos import photos_of

YAO_PHOTOS = {
    "team/players.jpg",
    "street/group_with_yao_behind.jpg",
    "portraits/yao_flipped.jpg",
    "portraits/yao_bright_small.jpg",
}


# --- helpers -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def settings(built_index: Path) -> ServiceSettings:
    """One pass per search: these tests check a one-selfie search's own thresholds and
    scores (automatic expansion, and the floor with it: tests/test_expansion.py)."""
    return ServiceSettings(index=built_index, device="cpu", rate_limit=None, daily_limit=None,
                           expand=False)


def jpeg(image: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90, **options)
    return out.getvalue()


def encoded_form(files: dict[str, tuple[str, bytes, str]],
                 data: dict[str, str] | None = None) -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart form, as httpx (a real client) encodes it."""
    request = httpx.Request("POST", "http://test/", files=files, data=data)
    return request.read(), request.headers["content-type"]


async def chunked(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def selfie_files(data: bytes, name: str = "selfie.jpg") -> dict[str, tuple[str, bytes, str]]:
    return {"selfie": (name, data, "image/jpeg")}


def found(client: TestClient, result: dict[str, Any]) -> list[str]:
    """The paths of the photos a search found, in its order: its result names them by
    image_key only."""
    services = client.app.state.services  # type: ignore[attr-defined]
    return photos_of(result["matches"], *services.settings.index)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


# --- fixtures ------------------------------------------------------------------------------

# A hand-made calibration under which Yao's 4 photos (scores 0.98, 0.94, 0.80, 0.63 in the
# 41-face demo index) are 3 strong matches and 1 possible one, all above its default at that
# size (0.463).
CALIBRATED = Calibration(pack="buffalo_s", recognizer_sha256=None, threshold=0.38,
                         fmr=[(0.2, 0.05), (0.4, 0.005), (0.6, 5e-4), (0.7, 1e-4), (0.8, 1e-5)],
                         impostor_comparisons=10_000_000, source="test")
UNCALIBRATED = Calibration(pack="buffalo_s", recognizer_sha256=None,
                           threshold=UNCALIBRATED_THRESHOLD, fmr=[], impostor_comparisons=0,
                           source="uncalibrated")


@pytest.fixture(params=["shipped", "hand-made", "uncalibrated"])
def curve(request: pytest.FixtureRequest, engine: FaceEngine,
          monkeypatch: pytest.MonkeyPatch) -> dict[str, Any] | None:
    """The engine with each calibration in turn: buffalo_s's own, CALIBRATED, UNCALIBRATED.
    Returns its numbers as a calibration file gives them (None: uncalibrated), for the tests to
    recompute what the service should say (tests/expected_strangers.py)."""
    if request.param == "shipped":
        assert engine.calibration.calibrated, "the packaged buffalo_s pack is not calibrated"
        return expected.shipped()
    chosen = CALIBRATED if request.param == "hand-made" else UNCALIBRATED
    monkeypatch.setattr(engine, "calibration", chosen)
    return json.loads(chosen.to_json()) if chosen.calibrated else None


def guide_of(curve: dict[str, Any] | None, size: int) -> list[dict[str, Any]]:
    """The threshold guide an index of ``size`` faces should show under ``curve``."""
    return [{"threshold": t, "expected_false_matches":
             None if curve is None else expected.rounded(expected.strangers(curve, t, size))}
            for t in GUIDE_THRESHOLDS]


def default_of(curve: dict[str, Any] | None, size: int) -> float:
    return UNCALIBRATED_THRESHOLD if curve is None else expected.default_threshold(curve, size)


def search(client: TestClient, data: bytes, **params: object) -> httpx.Response:
    return client.post("/api/search", files=selfie_files(data), params=params)


# --- uploads: in-memory multipart parsing ---------------------------------------------------

def test_read_multipart_parses_a_form_in_any_chunking() -> None:
    photo = random.Random(1).randbytes(5000)
    body, content_type = encoded_form(selfie_files(photo, "me.jpg"), {"threshold": "0.5"})
    for size in (1, 7, 4096, len(body)):
        form = anyio.run(lambda size=size: read_multipart(
            chunked(body, size), content_type=content_type, content_length=str(len(body)),
            max_bytes=len(body)))
        assert form["selfie"].data == photo
        assert form["selfie"].filename == "me.jpg"
        assert form["threshold"].text() == "0.5"
        assert file_field(form, "selfie", max_bytes=5000) == photo


def test_read_multipart_refuses_a_declared_length_before_reading() -> None:
    async def never() -> AsyncIterator[bytes]:
        raise AssertionError("the body was read")
        yield b""

    with pytest.raises(UploadTooLarge):
        anyio.run(lambda: read_multipart(never(), content_type="multipart/form-data; boundary=x",
                                         content_length="1000001", max_bytes=1_000_000))


def test_read_multipart_stops_reading_past_the_cap() -> None:
    read = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal read
        yield b'--x\r\nContent-Disposition: form-data; name="selfie"; filename="a"\r\n\r\n'
        while True:
            read += 1
            yield b"a" * 1000

    with pytest.raises(UploadTooLarge):
        anyio.run(lambda: read_multipart(endless(), content_type="multipart/form-data; boundary=x",
                                         content_length=None, max_bytes=10_000))
    assert read <= 11


@pytest.mark.parametrize(("content_type", "body", "error"), [
    ("application/json", b"{}", NotMultipart),
    (None, b"", NotMultipart),
    ("multipart/form-data", b"", MalformedUpload),  # no boundary
    ("multipart/form-data; boundary=x", b"not a form at all", MalformedUpload),
    ("multipart/form-data; boundary=x",
     b'--x\r\nContent-Disposition: form-data; name="selfie"\r\n\r\nabc', MalformedUpload),
    ("multipart/form-data; boundary=x",
     b'--x\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--x--\r\n', MalformedUpload),
])
def test_read_multipart_refuses_what_is_not_a_complete_form(
        content_type: str | None, body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        anyio.run(lambda: read_multipart(chunked(body, 5), content_type=content_type,
                                         content_length=None, max_bytes=10_000))


def test_read_multipart_refuses_repeated_and_too_many_fields() -> None:
    one = b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
    repeated = one * 2 + b"--x--\r\n"
    many = b"".join(
        b'--x\r\nContent-Disposition: form-data; name="f%d"\r\n\r\n1\r\n' % i
        for i in range(MAX_PARTS + 1)
    ) + b"--x--\r\n"
    for body in (repeated, many):
        with pytest.raises(MalformedUpload):
            anyio.run(lambda body=body: read_multipart(
                chunked(body, 64), content_type="multipart/form-data; boundary=x",
                content_length=None, max_bytes=100_000))
    # A field the caller names as repeatable: every part, in order.
    form = anyio.run(lambda: read_multipart(
        chunked(one.replace(b"1", b"2") + repeated, 64),
        content_type="multipart/form-data; boundary=x", content_length=None,
        max_bytes=100_000, repeatable=("a",)))
    assert [part.text() for part in form.every("a")] == ["2", "1", "1"]
    assert form["a"].text() == "2" and form.every("b") == []


def test_file_field_errors() -> None:
    body, content_type = encoded_form({"selfie": ("e.jpg", b"", "image/jpeg"),
                                       "big": ("b.jpg", b"x" * 11, "image/jpeg")})
    form = anyio.run(lambda: read_multipart(chunked(body, 100), content_type=content_type,
                                            content_length=None, max_bytes=10_000))
    with pytest.raises(MissingField):
        file_field(form, "photo", 10)
    with pytest.raises(EmptyUpload):
        file_field(form, "selfie", 10)
    with pytest.raises(UploadTooLarge):
        file_field(form, "big", 10)


# --- thumbnails: tokens and paths ------------------------------------------------------------

def test_thumbnail_tokens_verify_and_expire() -> None:
    now = [1_000_000.0]
    tokens = ThumbnailTokens(60, clock=lambda: now[0])
    token = tokens.issue(View.PHOTO, 7, 3)
    assert tokens.verify(View.PHOTO, token) == (7, 3)
    forged = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    other_process = ThumbnailTokens(60, clock=lambda: now[0])
    for bad in (forged, "garbage", "", token + "A", "../../etc/passwd"):
        with pytest.raises(ThumbnailNotFound):
            tokens.verify(View.PHOTO, bad)
    with pytest.raises(ThumbnailNotFound):
        other_process.verify(View.PHOTO, token)
    now[0] += 61
    with pytest.raises(ThumbnailNotFound):
        tokens.verify(View.PHOTO, token)


def test_tokens_sign_the_view_the_image_and_the_face() -> None:
    now = [1_000_000.0]
    tokens = ThumbnailTokens(60, clock=lambda: now[0])
    face, photo = tokens.issue(View.CLOSE_UP, 7, 3), tokens.issue(View.PHOTO, 7, 3)
    assert tokens.verify(View.CLOSE_UP, face) == (7, 3)
    with pytest.raises(ThumbnailNotFound):
        tokens.verify(View.PHOTO, face)  # a close-up link is not a photo link
    with pytest.raises(ThumbnailNotFound):
        tokens.verify(View.CLOSE_UP, photo)  # nor the other way round
    raw = bytearray(base64.urlsafe_b64decode(face + "=" * (-len(face) % 4)))
    for offset in (0, 4, 12):  # the view, the image id's and the face row's last bytes
        tampered = raw.copy()
        tampered[offset] ^= 1
        with pytest.raises(ThumbnailNotFound):
            tokens.verify(View.CLOSE_UP,
                          base64.urlsafe_b64encode(bytes(tampered)).rstrip(b"=").decode())
    now[0] += 61
    with pytest.raises(ThumbnailNotFound):
        tokens.verify(View.CLOSE_UP, face)


def test_face_square_keeps_a_margin_and_stays_in_the_photo() -> None:
    assert face_square((40, 40, 60, 70), 200, 100) == pytest.approx((23, 28, 77, 82))
    assert face_square((0, 0, 20, 30), 200, 100) == pytest.approx((0, 0, 54, 54))  # moved
    assert face_square((180, 80, 200, 100), 200, 100) == pytest.approx((164, 64, 200, 100))
    assert face_square((0, 0, 90, 90), 200, 100) == pytest.approx((0, 0, 100, 100))  # shrunk


def test_photo_bytes_stay_under_the_dataset_and_are_the_bytes_indexed(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.jpg").write_bytes(b"photo")
    digest = hashlib.sha256(b"photo").hexdigest()
    record = ImageRecord("k", "a/b.jpg", "ok", path="a/b.jpg", bytes=5, sha256=digest)
    assert photo_bytes(tmp_path, record) == b"photo"
    for bad in ("../secret.jpg", "/etc/passwd", "a/../../b.jpg", ""):
        with pytest.raises(PhotoUnavailable):
            photo_bytes(tmp_path, ImageRecord("k", bad, "ok", path=bad, sha256=digest))
    (tmp_path / "a" / "b.jpg").write_bytes(b"other")  # same length, other bytes
    for changed in (record, ImageRecord("k", "a/b.jpg", "ok", path="a/b.jpg", sha256=digest),
                    ImageRecord("k", "a/b.jpg", "ok", path="a/b.jpg")):  # nothing to check
        with pytest.raises(PhotoUnavailable):
            photo_bytes(tmp_path, changed)


# --- the app through its lifespan ----------------------------------------------------------

def test_healthz(client: TestClient, built_index: Path) -> None:
    index = FaceIndex(built_index)
    assert client.get("/healthz").json() == {
        "status": "ok", "model_pack": "buffalo_s", "index_size": index.size,
        "images": len(index.images),
    }


def test_info(client: TestClient, built_index: Path, settings: ServiceSettings,
              curve: dict[str, Any] | None) -> None:
    index = FaceIndex(built_index)
    info = client.get("/api/info").json()
    default = default_of(curve, index.size)
    assert info == {
        "model_pack": "buffalo_s", "index_size": index.size, "index_images": len(index.images),
        "calibrated": curve is not None,
        "default_threshold": default,
        "min_threshold": default,  # no search over HTTP runs below the default
        "threshold_guide": guide_of(curve, index.size),
        "max_upload_bytes": settings.max_upload_bytes, "max_results": settings.max_results,
        "max_selfies": 5, "max_template_faces": 5,
        "indexes": [{"dataset": "faceaudit-demo", "index_size": index.size,
                     "index_images": len(index.images)}],
    }
    # The guide spans the page's slider (0.20 to 0.90), ascending.
    thresholds = [p["threshold"] for p in info["threshold_guide"]]
    assert thresholds == sorted(thresholds) and thresholds[0] <= 0.2 and thresholds[-1] >= 0.9


def test_the_operators_threshold_is_the_default(settings: ServiceSettings, engine: FaceEngine,
                                                yao: bytes) -> None:
    with TestClient(create_app(settings.model_copy(update={"threshold": 0.5}),
                               engine=engine)) as operated:
        assert operated.get("/api/info").json()["default_threshold"] == 0.5
        result = search(operated, yao).json()
        assert result["threshold"] == result["default_threshold"] == 0.5


def test_page(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'accept="image/*" capture="user"' in page.text
    assert "not stored" in page.text or "never stored" in page.text
    assert "content-security-policy" in page.headers
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200
    for element in ('id="threshold-guide"', 'id="results-note"', 'aria-live="polite"'):
        assert element in page.text
    script = client.get("/static/app.js").text
    for used in ("/api/info", "face_thumbnail", "threshold_guide", "expected_false_matches",
                 "Strong match", "Possible match", "provenance", "uploader_name", "page_url",
                 "licence_name"):
        assert used in script
    # The page names a photo by its key: it has no path to show (see MatchOut).
    assert not re.search(r"\.image\b", script) and "source_record" not in script


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_page_script_parses() -> None:
    script = Path(__file__).parents[1] / "service" / "static" / "app.js"
    checked = subprocess.run(["node", "--check", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_openapi_documents_the_multipart_selfie(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/api/search"]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["selfie"]
    assert schema["properties"]["selfie"]["items"]["format"] == "binary"  # repeated: 1 to 5
    assert {"413", "422"} <= set(operation["responses"])
    assert client.get("/docs").status_code == 200


def test_openapi_documents_the_result_fields(client: TestClient) -> None:
    api = client.get("/openapi.json").json()
    schemas = api["components"]["schemas"]
    match, result = schemas["MatchOut"]["properties"], schemas["SearchResult"]["properties"]
    assert match["strength"]["enum"] == ["strong", "possible"]
    assert match["strength"]["description"] and match["face_thumbnail"]["description"]
    # Nothing that says where a photo is on disk: a path can name the person pictured.
    assert "image" not in match and "source_record" not in schemas["Provenance"]["properties"]
    for name in ("expected_false_matches", "calibrated", "default_threshold", "threshold_guide",
                 "index_images"):
        assert result[name]["description"], name
    assert {"/api/info", "/api/faces/{token}"} <= set(api["paths"])


def test_search_finds_every_photo_of_the_person_and_no_other(
        client: TestClient, yao: bytes, engine: FaceEngine, built_index: Path) -> None:
    response = search(client, yao)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    result = response.json()
    assert set(found(client, result)) == YAO_PHOTOS

    index = FaceIndex(built_index)
    matches = search_selfie(engine, index, decode_image(yao), threshold=result["threshold"])
    assert result["indexes"] == [{"dataset": "faceaudit-demo", "index_size": index.size,
                                  "index_images": len(index.images)}]
    for got, match in zip(result["matches"], matches, strict=True):
        assert (got["image_key"], got["face_id"], got["score"], got["bbox"]) == (
            match.record.key, str(match.face_id), match.score, list(match.bbox))
        assert "image" not in got  # its path: never sent (see test_what_a_search_shows.py)
        assert got["dataset"] == "faceaudit-demo"
        assert (got["width"], got["height"]) == (match.width, match.height)
        assert got["thumbnail"].startswith("/api/thumbnails/")
        # Provenance: the contract's keys but where it is in the dataset, from the manifest.
        provenance = got["provenance"]
        assert tuple(provenance) == tuple(f for f in PROVENANCE_FIELDS if f != "source_record")
        assert provenance["dataset"] == "faceaudit-demo"
        assert provenance["uploader_name"].startswith("PyPI package insightface")
        assert provenance["page_url"].startswith("https://pypi.org/project/insightface")
        assert len(provenance["sha256"]) == 64 and provenance["licence_name"] is None
        assert got["image_key"] == f"faceaudit-demo:sha256:{provenance['sha256']}"


def test_search_says_what_the_threshold_means(client: TestClient, yao: bytes,
                                              built_index: Path,
                                              curve: dict[str, Any] | None) -> None:
    result = search(client, yao).json()
    size = FaceIndex(built_index).size
    threshold = result["threshold"]
    assert threshold == result["default_threshold"] == default_of(curve, size)
    assert result["calibrated"] is (curve is not None)
    assert result["threshold_guide"] == guide_of(curve, size)
    strengths = [m["strength"] for m in result["matches"]]
    assert set(found(client, result)) == YAO_PHOTOS
    if curve is None:
        assert result["expected_false_matches"] is None
        assert set(strengths) == {"possible"}
        return
    assert result["expected_false_matches"] == expected.rounded(
        expected.strangers(curve, threshold, size)) > 0
    # "strong": fewer than 0.01 strangers expected to score as high in an index this size.
    assert strengths == ["strong" if expected.strangers(curve, m["score"], size) < 0.01
                         else "possible" for m in result["matches"]]
    if curve["source"] == "test":
        assert strengths == ["strong", "strong", "strong", "possible"]


def test_search_options(client: TestClient, yao: bytes) -> None:
    assert len(search(client, yao, top=1).json()["matches"]) == 1
    strict = client.post("/api/search", files=selfie_files(yao), data={"threshold": "0.95"})
    assert strict.json()["threshold"] == 0.95
    assert found(client, strict.json()) == ["portraits/yao_flipped.jpg"]
    assert_error(search(client, yao, threshold=1.5), 422, "invalid_parameter")
    assert_error(search(client, yao, top=0), 422, "invalid_parameter")
    bad_form = client.post("/api/search", files=selfie_files(yao), data={"threshold": "x"})
    assert_error(bad_form, 422, "invalid_parameter")


def test_thumbnail_from_a_result_is_a_jpeg(client: TestClient, yao: bytes,
                                           settings: ServiceSettings) -> None:
    match = search(client, yao).json()["matches"][0]
    response = client.get(match["thumbnail"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "no-store"  # a removal hides it at once
    with Image.open(io.BytesIO(response.content)) as thumb:
        assert thumb.format == "JPEG"
        assert max(thumb.size) <= settings.thumbnail_size
        # Same proportions as the photo, so the page can scale the box.
        assert thumb.size[0] / thumb.size[1] == pytest.approx(match["width"] / match["height"],
                                                              rel=0.02)


def test_face_close_ups_show_the_matched_face(client: TestClient, yao: bytes,
                                              engine: FaceEngine,
                                              settings: ServiceSettings) -> None:
    sides = {}
    result = search(client, yao).json()
    for match, photo in zip(result["matches"], found(client, result), strict=True):
        response = client.get(match["face_thumbnail"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/jpeg"
        assert response.headers["cache-control"] == "no-store"
        with Image.open(io.BytesIO(response.content)) as close_up:
            assert close_up.format == "JPEG"
            width, height = close_up.size
        assert abs(width - height) <= 2 and 16 <= width <= FACE_SIZE
        # The face is in it, and about in the middle (the square only moves off-centre to
        # stay inside the photo, which these faces are well within).
        faces = engine.detect(decode_image(response.content))
        assert faces, photo
        x1, y1, x2, y2 = max(faces, key=lambda f: f.short_side).bbox
        assert abs((x1 + x2) / 2 - width / 2) < 0.2 * width
        assert abs((y1 + y2) / 2 - height / 2) < 0.2 * height
        in_thumbnail = (match["bbox"][2] - match["bbox"][0]) * settings.thumbnail_size / max(
            match["width"], match["height"])
        sides[photo] = (x2 - x1, in_thumbnail)
    # In the team photo the face is a few pixels wide in the thumbnail; the close-up is the
    # point: several times as many.
    close_up, thumbnail = sides["team/players.jpg"]
    assert thumbnail < 20 and close_up > 3 * thumbnail


def test_a_close_up_of_a_large_photo_is_decoded_reduced_and_still_centred(
        yao: bytes, engine: FaceEngine, tmp_path: Path) -> None:
    # A big face far from the centre of a big photo: decoded at a fraction of its size, the
    # close-up must scale the face box with it.
    face = Image.open(io.BytesIO(yao)).convert("RGB")
    face = face.resize((face.width * 3, face.height * 3))
    photo = Image.new("RGB", (3000, 2000), (90, 90, 90))
    photo.paste(face, (2000, 1100))
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg(photo))
    detected = max(engine.detect(decode_image(path)), key=lambda f: f.short_side)
    data = render_face(path.read_bytes(), "big.jpg", detected.bbox, photo.size, others=[])
    with Image.open(io.BytesIO(data)) as close_up:
        assert close_up.size == (FACE_SIZE, FACE_SIZE)
    x1, y1, x2, y2 = max(engine.detect(decode_image(data)), key=lambda f: f.short_side).bbox
    assert abs((x1 + x2) / 2 - FACE_SIZE / 2) < 0.1 * FACE_SIZE
    assert abs((y1 + y2) / 2 - FACE_SIZE / 2) < 0.1 * FACE_SIZE
    assert (x2 - x1) > 0.4 * FACE_SIZE  # the face fills the close-up, margin aside


def test_face_links_for_another_face_or_tampered_are_404(client: TestClient,
                                                         yao: bytes) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    index = services.index
    match = search(client, yao).json()["matches"][0]
    face_token = match["face_thumbnail"].rsplit("/", 1)[1]
    photo_token = match["thumbnail"].rsplit("/", 1)[1]
    image_id, face_id = services.tokens.verify(View.CLOSE_UP, face_token)
    elsewhere = next(f for f in range(index.size) if int(index.faces.image_id[f]) != image_id)
    raw = bytearray(base64.urlsafe_b64decode(face_token + "=" * (-len(face_token) % 4)))
    raw[12] ^= 1  # another face row, the signature unchanged
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    bad = [
        tampered,
        photo_token,  # a photo link is not a close-up link
        # signed, but that face is not in the photo; no such face
        services.tokens.issue(View.CLOSE_UP, image_id, elsewhere),
        services.tokens.issue(View.CLOSE_UP, image_id, index.size),
        "garbage",
    ]
    for token in bad:
        assert_error(client.get(f"/api/faces/{token}"), 404, "not_found")
    assert_error(client.get(f"/api/thumbnails/{face_token}"), 404, "not_found")
    assert client.get(f"/api/faces/{face_token}").status_code == 200


def test_forged_or_garbage_thumbnail_links_are_404(client: TestClient, yao: bytes) -> None:
    token = search(client, yao).json()["matches"][0]["thumbnail"].rsplit("/", 1)[1]
    flipped = token[:20] + ("B" if token[20] != "B" else "C") + token[21:]
    for path in (f"/api/thumbnails/{flipped}", "/api/thumbnails/garbage",
                 "/api/thumbnails/..%2F..%2Fetc%2Fpasswd", "/api/thumbnails/0"):
        assert_error(client.get(path), 404, "not_found")


def test_bad_uploads_get_a_clear_4xx(client: TestClient, yao: bytes,
                                     collection: tuple[Path, Path]) -> None:
    photos = collection[0]
    cases = [
        (random.Random(0).randbytes(3000), 400, "unreadable_image"),
        (yao[: len(yao) // 2], 400, "unreadable_image"),
        (b"", 400, "empty_file"),
        (png_bomb(), 413, "image_too_large"),
        ((photos / "street" / "sky.png").read_bytes(), 422, "no_face"),
    ]
    for data, status, code in cases:
        assert_error(search(client, data), status, code)
    several = assert_error(search(client, (photos / "street" / "group.jpg").read_bytes()),
                           422, "multiple_faces")
    assert several["count"] >= 2 and str(several["count"]) in str(several["message"])
    missing = client.post("/api/search", files={"photo": ("a.jpg", yao, "image/jpeg")})
    assert_error(missing, 422, "missing_field")
    assert_error(client.post("/api/search", json={"selfie": "x"}), 415, "not_multipart")
    assert_error(client.post("/api/search", content=b"--x\r\nabc",
                             headers={"content-type": "multipart/form-data; boundary=x"}),
                 400, "malformed_upload")
    assert_error(client.get("/api/search"), 405, "method_not_allowed")


def test_byte_cap(settings: ServiceSettings, engine: FaceEngine, yao: bytes) -> None:
    capped = settings.model_copy(update={"max_upload_bytes": 1000})
    with TestClient(create_app(capped, engine=engine)) as capped_client:
        # Within the form overhead allowance, but a selfie over the cap.
        assert_error(search(capped_client, yao[:1500]), 413, "upload_too_large")
        # Declared by Content-Length, then streamed without one (chunked).
        assert_error(search(capped_client, yao + bytes(20_000)), 413, "upload_too_large")
        body, content_type = encoded_form(selfie_files(yao + bytes(20_000)))
        streamed = capped_client.post("/api/search", content=iter([body[:10_000], body[10_000:]]),
                                      headers={"content-type": content_type})
        assert_error(streamed, 413, "upload_too_large")


@pytest.fixture
def disk_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse, and record, every temporary file and every file opened for writing. Recorded
    too because frameworks may turn the refusal into an ordinary 400."""
    attempts: list[str] = []

    def refuse(what: str) -> None:
        attempts.append(what)
        raise AssertionError(f"disk write attempted: {what}")

    for name in ("SpooledTemporaryFile", "NamedTemporaryFile", "TemporaryFile", "mkstemp",
                 "mkdtemp"):
        monkeypatch.setattr(tempfile, name, lambda *a, _name=name, **k: refuse(_name))
    # Starlette imported its own reference before the patch.
    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile",
                        lambda *a, **k: refuse("SpooledTemporaryFile"))
    real_open, real_os_open = builtins.open, os.open

    def read_only_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if set(mode) & set("wax+"):
            refuse(f"open({file!r}, {mode!r})")
        return real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

    def read_only_os_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(f"os.open({path!r})")
        return real_os_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "open", read_only_open)
    monkeypatch.setattr(io, "open", read_only_open)
    monkeypatch.setattr(os, "open", read_only_os_open)
    return attempts


def test_the_disk_guard_catches_starlette_spooling(disk_writes: list[str]) -> None:
    """The guard is meaningful: the usual UploadFile route trips it."""
    app = FastAPI()

    @app.post("/upload")
    async def upload(selfie: UploadFile) -> int:
        return len(await selfie.read())

    with TestClient(app) as plain:
        assert plain.post("/upload", files=selfie_files(bytes(1_500_000))).status_code == 400
    assert disk_writes == ["SpooledTemporaryFile"]


def test_a_large_selfie_is_never_written_to_disk(client: TestClient, yao: bytes,
                                                 disk_writes: list[str]) -> None:
    # Bytes after a JPEG's end marker are ignored by decoders: a real selfie, over the 1 MB
    # above which Starlette's parser would spool it to a file.
    large = yao + bytes(1_500_000)
    response = search(client, large)
    assert response.status_code == 200
    assert set(found(client, response.json())) == YAO_PHOTOS
    assert disk_writes == []


def test_several_selfies_and_a_confirmed_photo_are_never_written_to_disk(
        client: TestClient, yao: bytes, disk_writes: list[str]) -> None:
    first = search(client, yao).json()["matches"][0]["match_id"]
    large = [yao + bytes(1_500_000), jpeg(Image.open(io.BytesIO(yao)).convert("L")), yao]
    response = client.post("/api/search", files=[("selfie", ("s.jpg", data, "image/jpeg"))
                                                 for data in large],
                           data={"confirmed": first})
    assert response.status_code == 200, response.text
    assert response.json()["template"] == {**response.json()["template"], "selfies": 3,
                                           "confirmed": 1}
    assert set(found(client, response.json())) == YAO_PHOTOS
    assert disk_writes == []


def test_an_exif_rotated_selfie_still_matches(client: TestClient,
                                              collection: tuple[Path, Path]) -> None:
    upright = Image.open(collection[1] / "yaoming.jpg").convert("RGB")
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # pixels turned a quarter left
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn a quarter right to display": upright again
    data = jpeg(sideways, exif=exif)
    assert decode_image(data).pixels.shape[:2] == (upright.height, upright.width)
    response = search(client, data)
    assert response.status_code == 200
    assert set(found(client, response.json())) == YAO_PHOTOS


def test_searches_never_run_the_engine_concurrently(
        client: TestClient, yao: bytes, engine: FaceEngine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    active, most = 0, 0
    guard = threading.Lock()
    detect = engine.detect

    def counting_detect(*args: object, **kwargs: object) -> object:
        nonlocal active, most
        with guard:
            active += 1
            most = max(most, active)
        try:
            time.sleep(0.02)
            return detect(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with guard:
                active -= 1

    monkeypatch.setattr(engine, "detect", counting_detect)
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: search(client, yao).status_code, range(4)))
    assert statuses == [200] * 4
    assert most == 1


def test_missing_photo_file_is_404(settings: ServiceSettings, engine: FaceEngine, yao: bytes,
                                   tmp_path: Path) -> None:
    moved = settings.model_copy(update={"dataset": [tmp_path]})
    app = create_app(moved, engine=engine)
    with TestClient(app) as moved_client:
        match = search(moved_client, yao).json()["matches"][0]
        for link in (match["thumbnail"], match["face_thumbnail"]):
            error = assert_error(moved_client.get(link), 404, "photo_unavailable")
            assert "/" not in str(error["message"])  # no path: it can name the person
    assert not hasattr(app.state, "services")  # released at shutdown


def test_rate_limit(settings: ServiceSettings, engine: FaceEngine, tmp_path: Path) -> None:
    # A state folder of its own: the limits count in it, for every process serving from it.
    limited = settings.model_copy(update={"rate_limit": "2/minute",
                                          "state_dir": tmp_path / "state"})
    with TestClient(create_app(limited, engine=engine)) as limited_client:
        for _ in range(2):
            assert limited_client.post("/api/search").status_code == 415
        response = limited_client.post("/api/search")
        assert_error(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) >= 1
        assert limited_client.get("/healthz").status_code == 200


def test_refuses_to_start_on_an_index_of_another_model_pack(
        settings: ServiceSettings, engine: FaceEngine, built_index: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-index"
    shutil.copytree(built_index, other)
    manifest = json.loads((other / "manifest.json").read_text())
    for entry in manifest["model_pack"]["files"].values():
        entry["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    app = create_app(settings.model_copy(update={"index": [other]}), engine=engine)
    with pytest.raises(IncompatibleIndex), TestClient(app):
        pass


# --- one real server -------------------------------------------------------------------------

def test_real_uvicorn_server(settings: ServiceSettings, engine: FaceEngine, yao: bytes) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # a free port, held from here on: no race with other tests
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings, engine=engine), log_level="warning",
                            access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            for _ in range(200):
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            else:
                pytest.fail("the server did not come up within 10 s")
            response = http.post("/api/search", files=selfie_files(yao))
            assert response.status_code == 200
            result = response.json()
            assert set(photos_of(result["matches"], *settings.index)) == YAO_PHOTOS
            for link in ("thumbnail", "face_thumbnail"):
                thumb = http.get(result["matches"][0][link])
                assert thumb.headers["content-type"] == "image/jpeg"
            assert http.get("/api/info").status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive()
