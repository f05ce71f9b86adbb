"""What a search shows: photos only as they were indexed, and nothing that names a person.

The photos are filed by identity, as LFW files them (``Firstname_Lastname/...``): there a path
names the person pictured, and a "possible" match may be a stranger."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from faceaudit.cli import app as cli
from faceaudit.demo import insightface_image, vectron_image
from faceaudit.imaging import decode_image
from faceaudit.indexer.build import build_index
from faceaudit.indexer.search import FaceIndex
from faceaudit.models.engine import FaceEngine
from faceaudit.service.app import create_app
from faceaudit.service.settings import ServiceSettings

# Who the photos are filed under: names that appear nowhere else, so that finding one in a
# response can only mean a path (or part of one) was sent.
NAMES = ("Ottoline", "Vandermeer", "Bartholomew", "Quillfeather")
PORTRAIT = "Ottoline_Vandermeer/Ottoline_Vandermeer_0001.jpg"


def file_by_identity(root: Path) -> Path:
    """Yao's portrait and a mirrored copy filed under one name, Tom Hanks under another."""
    yao = Image.open(vectron_image("yaoming.jpg")).convert("RGB")
    hanks = Image.open(insightface_image("Tom_Hanks_54745.png")).convert("RGB")
    for relative, image in ((PORTRAIT, yao),
                            ("Ottoline_Vandermeer/Ottoline_Vandermeer_0002.jpg",
                             yao.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
                            ("Bartholomew_Quillfeather/Bartholomew_Quillfeather_0001.jpg",
                             hanks)):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / relative, quality=90)
    return root


def serve(index: Path, engine: FaceEngine, **settings: object) -> TestClient:
    """The app over ``index``, its state next to it."""
    return TestClient(create_app(ServiceSettings(
        index=index, device="cpu", rate_limit=None, daily_limit=None,
        state_dir=index.parent / "state", **settings), engine=engine))


def search(client: TestClient, selfie: bytes, **params: float) -> dict[str, Any]:
    response = client.post("/api/search", files={"selfie": ("me.jpg", selfie, "image/jpeg")},
                           params=params)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def names_in(text: str) -> list[str]:
    return [name for name in NAMES if re.search(name, text, re.IGNORECASE)]


@pytest.fixture(scope="module")
def by_identity(tmp_path_factory: pytest.TempPathFactory, engine: FaceEngine) -> Path:
    """An index of the photos filed by identity, under the dataset name "people"."""
    root = file_by_identity(tmp_path_factory.mktemp("by-identity") / "photos")
    out = root.parent / "index"
    build_index(root, out, engine, dataset="people")
    return out


# --- nothing in a search result names a person ------------------------------------------------

def test_no_name_from_a_path_reaches_whoever_searched(by_identity: Path, engine: FaceEngine,
                                                      yao: bytes) -> None:
    refs = {record.ref for record in FaceIndex(by_identity).images}
    assert any(names_in(ref) for ref in refs)  # the index does hold them
    with serve(by_identity, engine) as client:
        response = client.post("/api/search", files={"selfie": ("me.jpg", yao, "image/jpeg")},
                               params={"threshold": 0.0001})
        assert response.status_code == 200, response.text
        body = response.text
        info = client.get("/api/info").text
    matches = response.json()["matches"]
    assert len(matches) == 2 and all(m["match_id"] for m in matches)
    assert names_in(body) == [] and names_in(info) == []
    for match in matches:  # what identifies the photo is the dataset's, not the server's disk
        assert "image" not in match and "source_record" not in match["provenance"]
        assert match["image_key"] == f"people:sha256:{match['provenance']['sha256']}"


def test_the_command_line_still_gives_operators_the_path(by_identity: Path,
                                                         collection: tuple[Path, Path]) -> None:
    result = CliRunner().invoke(cli, ["search", str(collection[1] / "yaoming.jpg"), "--index",
                                      str(by_identity), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert "Ottoline_Vandermeer" in result.stdout and "source_record" in result.stdout


# --- a photo is shown only as it was indexed --------------------------------------------------

def test_a_photo_changed_after_indexing_is_not_shown(
        engine: FaceEngine, yao: bytes, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    photos = file_by_identity(tmp_path / "photos")
    index = tmp_path / "index"
    build_index(photos, index, engine, dataset="people")
    [record] = [r for r in FaceIndex(index).images if r.ref == PORTRAIT]
    group = insightface_image("t1.jpg")  # six people
    assert len(engine.detect_all(decode_image(group))) == 6

    with serve(index, engine) as client:
        links = [(m["thumbnail"], m["face_thumbnail"]) for m in search(client, yao)["matches"]]
        assert len(links) == 2
        for link in (link for pair in links for link in pair):
            assert client.get(link).status_code == 200  # as indexed: shown
        shutil.copyfile(group, photos / PORTRAIT)  # overwritten in place, links still valid
        with caplog.at_level(logging.WARNING):
            answers = [client.get(link) for pair in links for link in pair]
    refused = [a for a in answers if a.status_code != 200]
    assert len(refused) == 2, "the overwritten portrait was served"
    for answer in refused:
        assert answer.status_code == 404, answer.text
        error = answer.json()["error"]
        assert error["code"] == "photo_unavailable" and error["message"]
        assert names_in(answer.text) == []
    logged = caplog.text
    assert record.key in logged and "not the one indexed" in logged
    assert names_in(logged) == []  # the server says which record, not whose photo

    # The same through --dataset naming another copy, where that photo differs.
    shutil.copyfile(photos / "Ottoline_Vandermeer/Ottoline_Vandermeer_0002.jpg",
                    photos / PORTRAIT)  # same size and faces, other bytes
    with serve(index, engine, dataset=[photos]) as client:
        served = [client.get(m["thumbnail"]).status_code for m in search(client, yao)["matches"]]
    assert sorted(served) == [200, 404]
