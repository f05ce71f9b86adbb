"""Every image the service sends shows the matched face and no other: the real detector is run
on what the routes return."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray
from PIL import Image

from faceaudit.demo import vectron_image
from faceaudit.imaging import decode_image
from faceaudit.indexer.build import build_index
from faceaudit.indexer.search import FaceIndex
from faceaudit.models.engine import DetectedFace, FaceEngine
from faceaudit.service.app import create_app
from faceaudit.service.settings import ServiceSettings
from faceaudit.service.thumbnails import (
    View,
    blur_faces,
    linked_face,
    photo_bytes,
    render_face,
    render_thumbnail,
)
from tests.photos import photos_of

TEAM = "team/players.jpg"
GROUP = "street/group_with_yao_behind.jpg"


@pytest.fixture(scope="module")
def client(built_index: Path, engine: FaceEngine) -> Iterator[TestClient]:
    settings = ServiceSettings(index=built_index, device="cpu", rate_limit=None,
                               daily_limit=None)
    with TestClient(create_app(settings, engine=engine)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def yao_matches(client: TestClient, collection: tuple[Path, Path],
                built_index: Path) -> dict[str, dict]:
    """Yao's matches by the path of their photo (which the result itself does not give)."""
    selfie = (collection[1] / "yaoming.jpg").read_bytes()
    response = client.post("/api/search", files={"selfie": ("s.jpg", selfie, "image/jpeg")})
    assert response.status_code == 200, response.text
    matches = response.json()["matches"]
    return dict(zip(photos_of(matches, built_index), matches, strict=True))


def token_of(link: str) -> str:
    return link.rsplit("/", 1)[1]


def detected(engine: FaceEngine, jpeg: bytes) -> list[DetectedFace]:
    return engine.detect_all(decode_image(jpeg))


def centre_inside(face: DetectedFace, box: NDArray[np.floating] | list[float]) -> bool:
    x1, y1, x2, y2 = box
    cx, cy = (face.bbox[0] + face.bbox[2]) / 2, (face.bbox[1] + face.bbox[3]) / 2
    return bool(x1 <= cx <= x2 and y1 <= cy <= y2)


def unblurred(client: TestClient, link: str, view: View) -> tuple[bytes, bytes]:
    """(the image served at ``link``, the same image rendered with nothing blurred)."""
    services = client.app.state.services  # type: ignore[attr-defined]
    image_id, face = services.tokens.verify(view, token_of(link))
    linked = linked_face(services.index, image_id, face)
    data = photo_bytes(services.photos_root, linked.record)
    if view is View.PHOTO:
        plain = render_thumbnail(data, linked.record.ref, services.settings.thumbnail_size,
                                 keep=None, others=[])
    else:
        plain = render_face(data, linked.record.ref, linked.bbox,
                            (linked.record.width, linked.record.height), others=[])
    served = client.get(link)
    assert served.status_code == 200
    return served.content, plain


# --- the photos and close-ups a search links to ----------------------------------------------

def test_the_team_photo_shows_only_the_matched_face(client: TestClient, engine: FaceEngine,
                                                    yao_matches: dict[str, dict]) -> None:
    match = yao_matches[TEAM]
    served, plain = unblurred(client, match["thumbnail"], View.PHOTO)
    assert len(detected(engine, plain)) >= 10  # the team, and people in the stands
    faces = detected(engine, served)
    assert len(faces) == 1
    scale = Image.open(io.BytesIO(served)).width / match["width"]
    assert centre_inside(faces[0], [v * scale for v in match["bbox"]])


def test_the_group_photo_shows_no_face_but_the_matched_one(
        client: TestClient, engine: FaceEngine, yao_matches: dict[str, dict]) -> None:
    match = yao_matches[GROUP]
    served, plain = unblurred(client, match["thumbnail"], View.PHOTO)
    assert len(detected(engine, plain)) >= 5
    scale = Image.open(io.BytesIO(served)).width / match["width"]
    # Yao, small behind the others, may be too small for the detector in the thumbnail.
    assert all(centre_inside(face, [v * scale for v in match["bbox"]])
               for face in detected(engine, served))


def test_close_ups_blur_the_neighbours_that_reach_into_them(
        client: TestClient, engine: FaceEngine, yao_matches: dict[str, dict]) -> None:
    served, plain = unblurred(client, yao_matches[TEAM]["face_thumbnail"], View.CLOSE_UP)
    assert len(detected(engine, plain)) >= 2  # Yao and his neighbour's face at the edge
    faces = detected(engine, served)
    assert len(faces) == 1
    width = Image.open(io.BytesIO(served)).width
    assert abs((faces[0].bbox[0] + faces[0].bbox[2]) / 2 - width / 2) < 0.2 * width
    for match in yao_matches.values():  # and every close-up shows one face
        assert len(detected(engine, client.get(match["face_thumbnail"]).content)) == 1


def test_the_index_gives_every_other_face_of_a_photo(client: TestClient,
                                                     yao_matches: dict[str, dict]) -> None:
    index: FaceIndex = client.app.state.services.index  # type: ignore[attr-defined]
    services = client.app.state.services  # type: ignore[attr-defined]
    image_id, face = services.tokens.verify(View.PHOTO, token_of(yao_matches[TEAM]["thumbnail"]))
    others = index.other_face_boxes(image_id, face)
    embedded = np.flatnonzero(np.asarray(index.faces.image_id) == image_id)
    small = np.flatnonzero(np.asarray(index.small_faces.image_id) == image_id)
    assert face in embedded and len(small) > 0
    expected = np.concatenate([index.faces.bbox[embedded[embedded != face]],
                               index.small_faces.bbox[small]])
    np.testing.assert_array_equal(others, expected)
    assert len(index.other_face_boxes(image_id + 1_000, 0)) == 0  # no such photo: no boxes


# --- links cannot be made to show another face ------------------------------------------------

def test_a_link_cannot_be_altered_to_show_another_face(client: TestClient,
                                                       yao_matches: dict[str, dict]) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    match = yao_matches[TEAM]
    for link, route, view in ((match["thumbnail"], "thumbnails", View.PHOTO),
                              (match["face_thumbnail"], "faces", View.CLOSE_UP)):
        token = token_of(link)
        image_id, face = services.tokens.verify(view, token)
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        for offset in range(len(raw)):  # every byte: view, image, face, expiry, signature
            tampered = bytearray(raw)
            tampered[offset] ^= 1
            forged = base64.urlsafe_b64encode(bytes(tampered)).rstrip(b"=").decode()
            response = client.get(f"/api/{route}/{forged}")
            assert response.status_code == 404, offset
            assert response.json()["error"]["code"] == "not_found"
        # Even a correctly signed link is refused for a face that is not of that photo.
        elsewhere = services.tokens.issue(view, image_id + 1, face)
        assert client.get(f"/api/{route}/{elsewhere}").status_code == 404
        assert client.get(link).status_code == 200
    # A close-up link does not open the whole photo, nor the other way round.
    assert client.get(f"/api/thumbnails/{token_of(match['face_thumbnail'])}").status_code == 404
    assert client.get(f"/api/faces/{token_of(match['thumbnail'])}").status_code == 404


# --- faces too small to embed --------------------------------------------------------------

def test_faces_too_small_to_embed_are_blurred_and_the_match_is_not(
        engine: FaceEngine, collection: tuple[Path, Path], tmp_path: Path) -> None:
    # Yao's portrait beside the team photo reduced to a third: its faces are mostly under
    # --min-face, found but not embedded.
    root = tmp_path / "photos"
    root.mkdir()
    yao = Image.open(vectron_image("yaoming.jpg")).convert("RGB")
    team = Image.open(vectron_image("players.jpg")).convert("RGB")
    team = team.resize((team.width // 3, team.height // 3))
    scene = Image.new("RGB", (team.width + yao.width, max(team.height, yao.height)), "gray")
    scene.paste(team, (0, 0))
    scene.paste(yao, (team.width, 0))
    scene.save(root / "scene.png")
    build_index(root, tmp_path / "index", engine)
    index = FaceIndex(tmp_path / "index")
    small = np.asarray(index.small_faces.bbox)
    assert len(small) >= 5

    settings = ServiceSettings(index=tmp_path / "index", device="cpu", rate_limit=None,
                               daily_limit=None,
                               thumbnail_size=max(scene.size))  # full size: exact pixels
    selfie = (collection[1] / "yaoming.jpg").read_bytes()
    with TestClient(create_app(settings, engine=engine)) as served:
        response = served.post("/api/search",
                               files={"selfie": ("s.jpg", selfie, "image/jpeg")})
        [match] = response.json()["matches"]
        thumbnail = served.get(match["thumbnail"])
    assert thumbnail.status_code == 200
    assert match["bbox"][0] >= team.width  # the portrait's face, not his small one

    plain = render_thumbnail((root / "scene.png").read_bytes(), "scene.png",
                             settings.thumbnail_size, keep=None, others=[])
    before, after = (np.asarray(decode_image(data).pixels, np.int16)
                     for data in (plain, thumbnail.content))
    assert before.shape == after.shape
    for x1, y1, x2, y2 in np.round(small).astype(int):
        changed = np.abs(after[y1:y2, x1:x2] - before[y1:y2, x1:x2]).mean()
        assert changed > 4, (x1, y1, x2, y2)
    x1, y1, x2, y2 = np.round(match["bbox"]).astype(int)
    w, h = x2 - x1, y2 - y1  # the matched face's core: untouched but for JPEG noise
    core = (slice(y1 + h // 4, y2 - h // 4), slice(x1 + w // 4, x2 - w // 4))
    assert np.abs(after[core] - before[core]).mean() < 1.5
    # Nothing the detector finds any more but the matched face.
    faces = detected(engine, thumbnail.content)
    assert faces and all(centre_inside(face, match["bbox"]) for face in faces)
    assert sum(not centre_inside(f, match["bbox"]) for f in detected(engine, plain)) >= 5


# --- the blur itself -------------------------------------------------------------------------

def test_blur_leaves_a_few_smooth_colours_and_nothing_outside_its_margin() -> None:
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    box, keep = (100.0, 50.0, 160.0, 130.0), (150.0, 40.0, 220.0, 120.0)
    out = blur_faces(noise, [box], keep)
    # The face and a margin of 30 % of its longer side (24 px) are a gradient: neighbouring
    # pixels differ by a few levels where the noise differs by about 85.
    patch = out[26:130, 76:150].astype(np.int16)
    assert np.abs(np.diff(patch, axis=1)).mean() < 4
    assert np.abs(np.diff(noise[26:130, 76:150].astype(np.int16), axis=1)).mean() > 60
    # Beyond the margin, and inside the matched face's box, nothing changed.
    outside = np.ones(noise.shape[:2], bool)
    outside[26:154, 76:184] = False
    assert (out[outside] == noise[outside]).all()
    assert (out[40:120, 150:220] == noise[40:120, 150:220]).all()
    # Whatever the face looked like, the patch is the same once the cells' means agree:
    # swapping two pixels within a cell changes nothing, so no detail is left to recover.
    swapped = noise.copy()
    swapped[60, 110], swapped[61, 111] = noise[61, 111], noise[60, 110]
    assert (blur_faces(swapped, [box], keep) == out).all()
    assert (blur_faces(noise, [], keep) == noise).all()


def test_blurring_a_real_face_defeats_the_detector(engine: FaceEngine) -> None:
    portrait = decode_image(vectron_image("yaoming.jpg"))
    [face] = engine.detect(portrait)
    assert not engine.detect_all(
        decode_image(_jpeg(blur_faces(portrait.pixels, [face.bbox]))))


def _jpeg(pixels: NDArray[np.uint8]) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=85)
    return out.getvalue()
