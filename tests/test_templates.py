"""Searching with several selfies and confirmed matches over HTTP: the template of one person's
selfies, the faces they confirm joining it only when their selfies found them, the thresholds
of the template searched, and which matches are new.

Several selfies of one person are transformations of the demo's portrait of Yao Ming (a crop,
a brightness change, a blur), which score as the same person; Tom Hanks's portrait is someone
else. Expected thresholds are recomputed from a calibration's own numbers
(tests/expected_strangers.py), never asked of the code under test.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageEnhance, ImageFilter

from faceaudit.errors import DifferentPeople
from faceaudit.models.calibration import Calibration
from faceaudit.models.engine import FaceEngine
from faceaudit.models.template_tails import TemplateCalibration, TemplateTail
from faceaudit.models.templates import fuse_template, odd_one_out, same_person_template
from faceaudit.models.thresholds import MAX_SELFIES, MAX_TEMPLATE_FACES
from faceaudit.service.app import create_app
from faceaudit.service.settings import ServiceSettings
from tests import expected_strangers as expected
from tests.photos import photos_of

YAO_PHOTOS = {"team/players.jpg", "street/group_with_yao_behind.jpg",
              "portraits/yao_flipped.jpg", "portraits/yao_bright_small.jpg"}


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def portrait(collection: tuple[Path, Path]) -> Image.Image:
    return Image.open(collection[1] / "yaoming.jpg").convert("RGB")


@pytest.fixture(scope="module")
def yaos(portrait: Image.Image) -> list[bytes]:
    """Three selfies of Yao Ming: the portrait, a crop of it, a darker copy."""
    w, h = portrait.size
    return [jpeg(portrait), jpeg(portrait.crop((w // 10, h // 10, w - w // 10, h - h // 20))),
            jpeg(ImageEnhance.Brightness(portrait).enhance(0.7))]


@pytest.fixture(scope="module")
def hanks(collection: tuple[Path, Path]) -> bytes:
    return jpeg(Image.open(collection[1] / "tom_hanks.png").convert("RGB"))


def post(client: TestClient, selfies: list[bytes], confirmed: list[str] | None = None,
         **fields: str) -> httpx.Response:
    """POST /api/search with the ``selfie`` and ``confirmed`` fields repeated, as a browser's
    FormData sends them."""
    files = [("selfie", (f"selfie{i}.jpg", s, "image/jpeg")) for i, s in enumerate(selfies)]
    data: dict[str, Any] = dict(fields)
    if confirmed:
        data["confirmed"] = confirmed
    return client.post("/api/search", files=files, data=data)


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


def paths(client: TestClient, result: dict[str, Any]) -> list[str]:
    return photos_of(result["matches"], *client.app.state.services.settings.index)  # type: ignore[attr-defined]


# --- the template: fusion and the same-person check ------------------------------------------

def test_fusion_is_the_renormalised_mean_of_the_normalised_embeddings() -> None:
    a, b = np.array([3.0, 4.0, 0.0]), np.array([0.0, 0.0, 2.0])
    # by hand: (0.6, 0.8, 0) and (0, 0, 1) -> mean (0.3, 0.4, 0.5), norm sqrt(0.5)
    want = np.array([0.3, 0.4, 0.5]) / np.sqrt(0.5)
    assert np.allclose(fuse_template([a, b]), want, atol=1e-6)
    one = np.array([0.6, 0.8], np.float32)
    assert fuse_template([one]) is not one and np.array_equal(fuse_template([one]), one)


def test_the_odd_one_out_is_the_selfie_least_like_the_others() -> None:
    rng = np.random.default_rng(7)
    person = rng.standard_normal(64)
    same = [person + 0.3 * rng.standard_normal(64) for _ in range(3)]
    other = rng.standard_normal(64)
    assert odd_one_out(same, 0.5) is None
    assert odd_one_out([same[0], other, same[1], same[2]], 0.5) == 1
    assert odd_one_out([same[0], other], 0.5) == 1  # two: the later one is named
    with pytest.raises(DifferentPeople, match="Selfie 3 ") as refused:
        same_person_template([same[0], same[1], other], 0.5)
    assert refused.value.selfie == 3


# --- several selfies over HTTP --------------------------------------------------------------

def test_several_selfies_of_one_person_find_their_photos(client: TestClient,
                                                         yaos: list[bytes]) -> None:
    response = post(client, yaos)
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(paths(client, result)) == YAO_PHOTOS
    assert result["template"]["selfies"] == 3 and result["template"]["confirmed"] == 0
    assert not any(match["new"] for match in result["matches"])


def test_selfies_of_different_people_are_refused_naming_the_one_that_differs(
        client: TestClient, yaos: list[bytes], hanks: bytes) -> None:
    two = error_of(post(client, [yaos[0], hanks]), 422, "different_people")
    assert two["selfie"] == 2 and "Selfie 2" in two["message"]
    first = error_of(post(client, [hanks, yaos[0], yaos[1]]), 422, "different_people")
    assert first["selfie"] == 1 and "Selfie 1 " in first["message"]


def test_each_selfie_must_show_one_face_and_errors_name_it(
        client: TestClient, yaos: list[bytes], collection: tuple[Path, Path]) -> None:
    sky = (collection[0] / "street" / "sky.png").read_bytes()
    crowd = (collection[0] / "street" / "group.jpg").read_bytes()
    no_face = error_of(post(client, [yaos[0], sky]), 422, "no_face")
    assert no_face["selfie"] == 2 and no_face["message"].startswith("Selfie 2: ")
    several = error_of(post(client, [crowd, yaos[0]]), 422, "multiple_faces")
    assert several["selfie"] == 1 and several["count"] >= 2
    empty = error_of(post(client, [yaos[0], b""]), 400, "empty_file")
    assert empty["selfie"] == 2


def test_more_selfies_than_a_search_takes_are_refused(client: TestClient,
                                                      yaos: list[bytes]) -> None:
    too_many = (yaos * 2)[: MAX_SELFIES + 1]
    error = error_of(post(client, too_many), 422, "too_many_selfies")
    assert f"at most {MAX_SELFIES}" in error["message"]
    assert post(client, too_many[:MAX_SELFIES]).status_code == 200


def test_one_request_is_one_search_for_the_rate_limit(settings: ServiceSettings,
                                                      engine: FaceEngine, yaos: list[bytes],
                                                      tmp_path: Path) -> None:
    limited = settings.model_copy(update={"rate_limit": "2/minute",
                                          "state_dir": tmp_path / "state"})
    with TestClient(create_app(limited, engine=engine)) as limited_client:
        assert [post(limited_client, yaos).status_code for _ in range(2)] == [200, 200]
        error_of(post(limited_client, yaos[:1]), 429, "rate_limited")


def test_the_openapi_body_documents_repeated_selfies_and_confirmations(
        client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/api/search"]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    selfie, confirmed = schema["properties"]["selfie"], schema["properties"]["confirmed"]
    assert selfie["type"] == "array" and selfie["maxItems"] == MAX_SELFIES
    assert selfie["items"]["format"] == "binary"
    assert confirmed["type"] == "array" and confirmed["items"]["type"] == "string"
    info = client.get("/api/info").json()
    assert (info["max_selfies"], info["max_template_faces"]) == (MAX_SELFIES,
                                                                 MAX_TEMPLATE_FACES)


# --- thresholds of the template searched ----------------------------------------------------

def _tail(kind: str, faces: int, shift: float) -> TemplateTail:
    return TemplateTail(kind=kind, faces=faces, fmr=[(t + shift, r) for t, r in BASE],
                        impostor_comparisons=10_000_000, tail=None, templates=1000, people=100)


# A hand-made calibration whose template curves lie 0.04 higher per face: at the demo index's
# 41 faces each template size has a default of its own.
BASE = [(0.2, 0.05), (0.4, 0.005), (0.6, 5e-4), (0.7, 1e-4), (0.8, 1e-5)]
TEMPLATED = Calibration(
    pack="buffalo_s", recognizer_sha256=None, threshold=0.38, fmr=BASE,
    impostor_comparisons=10_000_000, source="test",
    templates=TemplateCalibration(
        same_person_threshold=0.3,
        tails=[_tail("selfies", n, 0.04 * (n - 1)) for n in range(1, MAX_TEMPLATE_FACES + 1)]
        + [_tail("confirmed", n, 0.04 * n) for n in range(2, MAX_TEMPLATE_FACES + 1)]))


@pytest.fixture
def templated(engine: FaceEngine, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(engine, "calibration", TEMPLATED)
    curve: dict[str, Any] = json.loads(TEMPLATED.to_json())
    return curve


def test_a_template_is_searched_at_its_own_default_and_never_below(
        client: TestClient, yaos: list[bytes], templated: dict[str, Any]) -> None:
    size = client.get("/api/info").json()["index_size"]
    defaults = [expected.template_default(templated, size, k) for k in (1, 2, 3)]
    assert defaults[0] < defaults[1] < defaults[2]  # else this test proves nothing
    for k in (1, 2, 3):
        result = post(client, yaos[:k], threshold=f"{defaults[0]}").json()
        # One selfie is expanded: its template then holds the faces that joined it.
        joined = result["template"]["expanded"]
        assert (joined > 0) is (k == 1)
        want = expected.template_default(templated, size, k, joined)
        assert result["threshold"] == result["default_threshold"] == want
        assert result["min_threshold"] == want
        assert result["threshold_clamped"] is (want > defaults[0])
        assert result["expected_false_matches"] == expected.rounded(
            size * expected.template_rate(templated, want, k, joined))
        assert result["template"]["selfies"] == k
        assert all(m["score"] > want for m in result["matches"])


# --- confirmed matches ----------------------------------------------------------------------

@pytest.fixture
def own_state(settings: ServiceSettings, engine: FaceEngine, tmp_path: Path
              ) -> Iterator[TestClient]:
    """A service with a state folder of its own (removals made here stay here), whose
    operator raised the threshold to 0.5: a blurred selfie then misses a photo (automatic
    expansion off: it would find it, see tests/test_expansion.py)."""
    mine = settings.model_copy(update={"state_dir": tmp_path / "state", "threshold": 0.5,
                                       "expand": False})
    with TestClient(create_app(mine, engine=engine)) as own:
        yield own


def _by_path(client: TestClient, result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(zip(paths(client, result), result["matches"], strict=True))


def test_confirmed_photos_join_the_template_and_new_matches_are_marked(
        own_state: TestClient, portrait: Image.Image) -> None:
    blurred = jpeg(portrait.filter(ImageFilter.GaussianBlur(4)))
    first = post(own_state, [blurred]).json()
    found = _by_path(own_state, first)
    assert "team/players.jpg" not in found and "portraits/yao_flipped.jpg" in found
    again = post(own_state, [blurred], [found["portraits/yao_flipped.jpg"]["match_id"]]).json()
    assert again["template"] == {**again["template"], "selfies": 1, "confirmed": 1,
                                 "confirmed_sent": 1, "note": None}
    now = _by_path(own_state, again)
    assert set(now) == set(found) | {"team/players.jpg"}
    assert {path for path, match in now.items() if match["new"]} == {"team/players.jpg"}


def test_a_face_the_selfies_did_not_find_cannot_be_confirmed(
        client: TestClient, yaos: list[bytes], hanks: bytes) -> None:
    # Someone else's photo, found with their own selfie: a chain to another person.
    other = post(client, [hanks]).json()["matches"][0]["match_id"]
    mine = post(client, yaos[:2]).json()["matches"][0]["match_id"]
    error = error_of(post(client, yaos[:2], [mine, other]), 422, "confirmation_refused")
    assert "Confirmed photo 2 " in error["message"]
    assert post(client, yaos[:2], [mine]).json()["template"]["confirmed"] == 1


def test_the_template_holds_at_most_five_faces_the_closest_confirmed_ones(
        client: TestClient, yaos: list[bytes]) -> None:
    matches = post(client, yaos[:2]).json()["matches"]
    assert len(matches) == 4
    result = post(client, yaos[:2], [m["match_id"] for m in matches]).json()
    template = result["template"]
    assert (template["selfies"], template["confirmed"], template["confirmed_sent"]) == (2, 3, 4)
    assert "3 most like your selfies" in template["note"]


def test_a_removed_face_cannot_be_confirmed(own_state: TestClient,
                                            yaos: list[bytes]) -> None:
    matches = post(own_state, yaos[:1]).json()["matches"]
    removed = matches[0]["match_id"]
    assert own_state.post("/api/removals", json={"matches": [removed]}).status_code == 201
    error = error_of(post(own_state, yaos[:1], [removed]), 422, "confirmation_refused")
    assert "removal was requested" in error["message"]


def test_a_confirmation_must_be_a_match_id_this_service_issued(
        client: TestClient, yaos: list[bytes]) -> None:
    # An embedding never comes from the client: anything but a match id is refused.
    vector = ",".join(["0.1"] * 8)
    error_of(post(client, yaos[:1], [vector]), 422, "invalid_match_id")
