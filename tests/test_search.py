"""Searching with a selfie, in Python and through the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance
from typer.testing import CliRunner

from faceaudit.cli import app
from faceaudit.errors import MultipleFaces, NoFaceFound
from faceaudit.imaging import decode_image
from faceaudit.indexer.search import FaceIndex, search_selfie
from faceaudit.models.engine import FaceEngine

YAO_PHOTOS = {
    "team/players.jpg",  # one face among a team, in someone else's photo
    "street/group_with_yao_behind.jpg",  # small, in the background of a group photo
    "portraits/yao_flipped.jpg",
    "portraits/yao_bright_small.jpg",
}


def _found(engine: FaceEngine, index: FaceIndex, selfie: Path | bytes) -> set[str]:
    return {m.image for m in search_selfie(engine, index, decode_image(selfie))}


def test_a_selfie_finds_all_of_that_persons_photos_and_no_others(
    engine: FaceEngine, built_index: Path, collection: tuple[Path, Path]
) -> None:
    index = FaceIndex(built_index)
    selfies = collection[1]
    assert _found(engine, index, selfies / "yaoming.jpg") == YAO_PHOTOS
    assert _found(engine, index, selfies / "tom_hanks.png") == {"portraits/hanks.jpg"}
    assert _found(engine, index, selfies / "astronaut.jpg") == {"portraits/astronaut.png"}


def test_matches_are_ranked_and_each_photo_appears_once(
    engine: FaceEngine, built_index: Path, collection: tuple[Path, Path]
) -> None:
    index = FaceIndex(built_index)
    selfie = decode_image(collection[1] / "yaoming.jpg")
    matches = search_selfie(engine, index, selfie, threshold=-1.0)
    scores = [m.score for m in matches]
    assert scores == sorted(scores, reverse=True)
    assert len({m.image for m in matches}) == len(matches)
    assert len(matches) == 8  # every photo with a face, once, at the lowest threshold
    team = next(m for m in matches if m.image == "team/players.jpg")
    assert team.bbox[2] - team.bbox[0] < 80  # the matched face, not the whole photo
    assert [m.image for m in search_selfie(engine, index, selfie, top=2)] == [
        m.image for m in matches[:2]]


def test_exif_rotated_selfie_still_matches(
    engine: FaceEngine, built_index: Path, collection: tuple[Path, Path]
) -> None:
    upright = Image.open(collection[1] / "yaoming.jpg")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a phone stores a portrait shot
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif, quality=95)
    assert _found(engine, FaceIndex(built_index), buffer.getvalue()) == YAO_PHOTOS


def test_selfie_with_no_face_or_several_faces(
    engine: FaceEngine, built_index: Path, collection: tuple[Path, Path]
) -> None:
    index = FaceIndex(built_index)
    with pytest.raises(NoFaceFound, match="No face"):
        search_selfie(engine, index, decode_image(collection[0] / "street" / "sky.png"))
    with pytest.raises(MultipleFaces, match="6 faces") as error:
        search_selfie(engine, index, decode_image(collection[0] / "street" / "group.jpg"))
    assert error.value.count == 6


runner = CliRunner()


def test_cli_search_json(built_index: Path, collection: tuple[Path, Path]) -> None:
    result = runner.invoke(app, ["search", str(collection[1] / "yaoming.jpg"), "--index",
                                 str(built_index), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    response = json.loads(result.stdout)
    assert response["faces_in_selfie"] == 1 and response["model_pack"] == "buffalo_s"
    assert {m["image"] for m in response["matches"]} == YAO_PHOTOS
    first = response["matches"][0]
    assert set(first) >= {"image", "score", "bbox"} and len(first["bbox"]) == 4


def test_cli_search_text_and_errors(built_index: Path, collection: tuple[Path, Path]) -> None:
    result = runner.invoke(app, ["search", str(collection[1] / "tom_hanks.png"), "--index",
                                 str(built_index), "--device", "cpu"])
    assert result.exit_code == 0 and "portraits/hanks.jpg" in result.stdout
    group = collection[0] / "street" / "group.jpg"
    result = runner.invoke(app, ["search", str(group), "--index", str(built_index)])
    assert result.exit_code == 2 and "6 faces were found" in result.stderr
    result = runner.invoke(app, ["search", str(group), "--index", str(group.parent)])
    assert result.exit_code == 2 and "not a faceaudit index" in result.stderr
    result = runner.invoke(app, ["search", str(group), "--index", str(built_index),
                                 "--device", "cuda"])
    assert result.exit_code == 2  # no CUDA here: an error, never a silent CPU fallback


def test_cli_search_with_several_selfies(built_index: Path, collection: tuple[Path, Path],
                                        tmp_path: Path) -> None:
    portrait = Image.open(collection[1] / "yaoming.jpg").convert("RGB")
    w, h = portrait.size
    crop, dark = tmp_path / "crop.jpg", tmp_path / "dark.jpg"
    portrait.crop((w // 10, h // 10, w - w // 10, h - h // 20)).save(crop)
    ImageEnhance.Brightness(portrait).enhance(0.7).save(dark)
    selfies = [str(collection[1] / "yaoming.jpg"), str(crop), str(dark)]
    result = runner.invoke(app, ["search", *selfies, "--index", str(built_index), "--json",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    response = json.loads(result.stdout)
    assert {m["image"] for m in response["matches"]} == YAO_PHOTOS
    assert response["template"] == {"selfies": 3, "confirmed": 0, "expanded": 0}
    text = runner.invoke(app, ["search", *selfies[:2], "--index", str(built_index)])
    assert text.exit_code == 0 and text.stdout.startswith("2 selfies of one person")
    hanks = str(collection[1] / "tom_hanks.png")
    refused = runner.invoke(app, ["search", selfies[0], hanks, "--index", str(built_index)])
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: Selfie 2 does not look like the same person")
    sky = str(collection[0] / "street" / "sky.png")
    no_face = runner.invoke(app, ["search", selfies[0], sky, "--index", str(built_index)])
    assert no_face.exit_code == 2 and no_face.stderr.startswith("error: Selfie 2: No face")
    many = runner.invoke(app, ["search", *selfies * 2, "--index", str(built_index)])
    assert many.exit_code == 2 and "at most 5" in many.stderr
    assert len(many.stderr.strip().splitlines()) == 1


def test_cli_index_prints_a_summary(collection: tuple[Path, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["index", str(collection[0] / "street"), "--out",
                                 str(tmp_path / "ix"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "5 images: 3 with faces (" in result.stdout and "images/s" in result.stdout
    assert ", 2 without a face, 0 failed\n" in result.stdout


def test_cli_models_lists_digests_and_licence() -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "sha256 verified" in result.stdout and "non-commercial" in result.stdout


def test_a_close_up_filling_a_large_photo_is_found(engine: FaceEngine, built_index: Path,
                                                   collection: tuple[Path, Path]) -> None:
    """A phone selfie: a face filling most of a several-megapixel frame (SCRFD misses faces
    over about 330 px of its input, so the engine also detects at a coarse scale)."""
    selfie = Image.open(collection[1] / "yaoming.jpg")
    large = selfie.resize((selfie.width * 8, selfie.height * 8), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    large.save(buffer, "JPEG", quality=90)
    assert _found(engine, FaceIndex(built_index), buffer.getvalue()) == YAO_PHOTOS


def test_a_selfie_face_too_small_to_search_reliably(engine: FaceEngine, built_index: Path,
                                                    collection: tuple[Path, Path]) -> None:
    from faceaudit.errors import FaceTooSmall

    selfie = Image.open(collection[1] / "yaoming.jpg")
    tiny = selfie.resize((selfie.width // 4, selfie.height // 4), Image.Resampling.LANCZOS)
    scene = Image.new("RGB", (320, 320), (90, 110, 130))
    scene.paste(tiny, (140, 130))
    buffer = io.BytesIO()
    scene.save(buffer, "PNG")
    with pytest.raises(FaceTooSmall, match="pixels across"):
        search_selfie(engine, FaceIndex(built_index), decode_image(buffer.getvalue()))
