"""`faceaudit cohort`: consenting participants' selfies searched in two indexes, under the
service's limits, to a results CSV and a per-participant summary."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance
from typer.testing import CliRunner

from faceaudit.cli import app as cli
from faceaudit.indexer.build import build_index
from faceaudit.models.engine import FaceEngine
from faceaudit.models.thresholds import MAX_RESULTS, MAX_SELFIES, MEANING
from tests.expected_strangers import (
    lowest,
    shipped,
    strangers,
    template_default,
    template_lowest,
)

runner = CliRunner()
YAO_PHOTOS = {"team/players.jpg", "street/group_with_yao_behind.jpg",
              "portraits/yao_flipped.jpg", "portraits/yao_bright_small.jpg"}


@pytest.fixture(scope="module")
def other_index(collection: tuple[Path, Path], engine: FaceEngine,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same photos indexed as a second dataset, "other"."""
    out = tmp_path_factory.mktemp("other") / "other-index"
    build_index(collection[0] / "manifest.csv", out, engine, dataset="other")
    return out


@pytest.fixture
def selfies(collection: tuple[Path, Path], tmp_path: Path) -> Path:
    """Participants: yao, hanks and astronaut (found), crowd (a group photo), sky (no face),
    broken (not an image), and yao again under another extension."""
    photos, given = collection
    folder = tmp_path / "selfies"
    folder.mkdir()
    shutil.copy(given / "yaoming.jpg", folder / "yao.jpg")
    shutil.copy(given / "yaoming.jpg", folder / "yao.png")
    shutil.copy(given / "tom_hanks.png", folder / "hanks.png")
    shutil.copy(given / "astronaut.jpg", folder / "astronaut.jpg")
    shutil.copy(photos / "street" / "group.jpg", folder / "crowd.jpg")
    shutil.copy(photos / "street" / "sky.png", folder / "sky.png")
    (folder / "broken.jpg").write_bytes(b"this is not a photo")
    (folder / "consent-forms.txt").write_text("not a selfie")
    return folder


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_cohort_writes_found_photos_and_a_summary_per_participant(
        built_index: Path, other_index: Path, selfies: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "results.csv"
    result = runner.invoke(cli, ["cohort", str(selfies), "--index", str(built_index),
                                 "--index", str(other_index), "--out", str(out),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    # Only what was asked for is written: no embeddings, crops or copies of the selfies.
    assert sorted(p.name for p in out.parent.iterdir()) == ["results.csv",
                                                            "results.summary.csv"]

    rows = _read(out)
    yao = [row for row in rows if row["participant"] == "yao"]
    assert sorted(row["dataset"] for row in yao) == ["faceaudit-demo"] * 4 + ["other"] * 4
    for dataset in ("faceaudit-demo", "other"):
        assert {row["image"] for row in yao if row["dataset"] == dataset} == YAO_PHOTOS
    assert len({row["image_key"] for row in yao}) == 8
    assert all(row["page_url"].startswith("https://") for row in yao)
    assert {row["strength"] for row in rows} <= set(MEANING)
    assert all(row["meaning"] == MEANING[row["strength"]] for row in rows)
    assert all(float(row["score"]) > float(row["threshold"]) for row in rows)
    astronaut = [row for row in rows if row["participant"] == "astronaut"]
    assert astronaut and all(row["licence_name"].startswith("No known copyright")
                             for row in astronaut)
    assert all(row["licence_url"] == "" for row in astronaut)  # the source gives none

    summary_rows = _read(out.with_name("results.summary.csv"))
    assert [row["participant"] for row in summary_rows] == [
        "astronaut", "broken", "crowd", "hanks", "sky", "yao", "yao"]
    summary = {row["participant"]: row for row in summary_rows[:-1]}
    assert summary["broken"]["status"] == "unreadable_image"
    assert summary["sky"]["status"] == "no_face"
    assert summary["crowd"]["status"] == "multiple_faces"
    assert "faces in the selfie" in summary["crowd"]["reason"]
    assert summary["hanks"]["status"] == "ok" and int(summary["hanks"]["photos_found"]) == 2
    yao_rows = [row for row in summary_rows if row["participant"] == "yao"]
    assert [row["status"] for row in yao_rows] == ["ok", "duplicate_participant"]
    first = yao_rows[0]
    assert int(first["photos_found"]) == 8
    assert first["datasets_found"] == "faceaudit-demo;other"
    assert int(first["photos_in_several_datasets"]) == 4  # the same bytes in both

    assert "7 participants: 3 searched (1 duplicate_participant, 1 multiple_faces, 1 no_face, "\
        "1 unreadable_image)" in result.stdout


def test_cohort_totals_as_json(built_index: Path, other_index: Path, selfies: Path,
                               tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    result = runner.invoke(cli, ["cohort", str(selfies), "--index", str(built_index),
                                 "--index", str(other_index), "--out", str(out),
                                 "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    totals = json.loads(result.stdout)
    rows = _read(out)
    assert totals["photos_found"] == len(rows)
    assert totals["datasets"] == ["faceaudit-demo", "other"]
    # yao's 4 photos and hanks's and the astronaut's, each in both datasets.
    shared = {row["sha256"] for row in rows if row["dataset"] == "other"} & {
        row["sha256"] for row in rows if row["dataset"] == "faceaudit-demo"}
    assert totals["photos_in_several_datasets"] == len(shared) >= 4
    assert totals["errors"] == {"unreadable_image": 1, "no_face": 1, "multiple_faces": 1,
                                "duplicate_participant": 1}
    assert set(totals["thresholds"]) == {"faceaudit-demo", "other"}


def test_cohort_refuses_a_threshold_under_the_floor(built_index: Path, selfies: Path,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    low = runner.invoke(cli, ["cohort", str(selfies), "--index", str(built_index),
                              "--out", str(out), "--threshold", "0.05", "--device", "cpu"])
    assert low.exit_code == 2
    assert "below this index's floor" in low.output
    assert not out.exists()

    many = runner.invoke(cli, ["cohort", str(selfies), "--index", str(built_index),
                               "--out", str(out), "--top", str(MAX_RESULTS + 1),
                               "--device", "cpu"])
    assert many.exit_code == 2 and f"over the {MAX_RESULTS} photos" in many.output

    allowed = runner.invoke(cli, ["cohort", str(selfies), "--index", str(built_index),
                                  "--out", str(out), "--threshold", "0.05",
                                  "--allow-low-threshold", "--device", "cpu"])
    assert allowed.exit_code == 0, allowed.output
    strangers = [row for row in _read(out) if row["participant"] == "yao"]
    assert len(strangers) > 4  # the floor is what kept these out


def _faces(index: Path) -> int:
    return int(json.loads((index / "manifest.json").read_text())["counts"]["faces"])


def test_cohort_bounds_strangers_over_the_indexes_combined_size(
        built_index: Path, other_index: Path, selfies: Path, tmp_path: Path) -> None:
    # As the service does: a participant's search of two indexes is held to the bound one
    # index of their combined size would be (at most 1 stranger expected per search, the
    # command line's floor), not to that bound in each. Recomputed from the calibration file.
    calibration = shipped()
    each = max(lowest(calibration, _faces(built_index), 1.0),
               lowest(calibration, _faces(other_index), 1.0))
    combined = lowest(calibration, _faces(built_index) + _faces(other_index), 1.0)
    assert each < combined  # the sizes make the two bounds differ
    below = f"{combined - 0.001:.3f}"  # enough for either index alone, not for both
    assert strangers(calibration, float(below), _faces(built_index)) <= 1.0
    assert strangers(calibration, float(below), _faces(built_index) + _faces(other_index)) > 1
    out = tmp_path / "results.csv"
    args = ["cohort", str(selfies), "--out", str(out), "--device", "cpu"]
    one = runner.invoke(cli, [*args, "--index", str(built_index), "--threshold", below])
    assert one.exit_code == 0, one.output
    both = runner.invoke(cli, [*args, "--index", str(built_index), "--index", str(other_index),
                               "--threshold", below])
    assert both.exit_code == 2 and "floor" in both.output
    at = runner.invoke(cli, [*args, "--index", str(built_index), "--index", str(other_index),
                             "--threshold", f"{combined:.3f}"])
    assert at.exit_code == 0, at.output
    assert f"threshold {combined:.3f} for " in at.output
    assert "as asked, for every participant" in at.output


def test_cohort_caps_a_participants_photos_over_all_indexes(
        built_index: Path, other_index: Path, selfies: Path, tmp_path: Path) -> None:
    indexes = ["--index", str(built_index), "--index", str(other_index)]
    every = tmp_path / "every.csv"
    # One pass each (--no-expand): the capped run lists the first of the same scores.
    assert runner.invoke(cli, ["cohort", str(selfies), *indexes, "--out", str(every),
                               "--device", "cpu", "--no-expand"]).exit_code == 0
    scores = sorted((float(row["score"]) for row in _read(every) if row["participant"] == "yao"),
                    reverse=True)
    assert len(scores) == 8  # 4 photos in each index
    capped = tmp_path / "capped.csv"
    result = runner.invoke(cli, ["cohort", str(selfies), *indexes, "--out", str(capped),
                                 "--top", "3", "--device", "cpu", "--no-expand"])
    assert result.exit_code == 0, result.output
    yao = [row for row in _read(capped) if row["participant"] == "yao"]
    assert sorted((float(row["score"]) for row in yao), reverse=True) == scores[:3]
    summary = next(row for row in _read(capped.with_name("capped.summary.csv"))
                   if row["participant"] == "yao")  # the first: the second is a duplicate
    assert summary["photos_found"] == "3" and summary["capped_in"] == "faceaudit-demo;other"


def test_a_participant_may_be_a_folder_of_selfies(built_index: Path,
                                                 collection: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    photos, given = collection
    portrait = Image.open(given / "yaoming.jpg").convert("RGB")
    w, h = portrait.size
    folder = tmp_path / "selfies"
    yao = folder / "yao"  # three selfies of one person: one template
    yao.mkdir(parents=True)
    portrait.save(yao / "a.jpg")
    portrait.crop((w // 10, h // 10, w - w // 10, h - h // 20)).save(yao / "b.jpg")
    ImageEnhance.Brightness(portrait).enhance(0.7).save(yao / "c.png")
    (yao / "notes.txt").write_text("not a selfie")
    mixed = folder / "mixed"  # two people
    mixed.mkdir()
    portrait.save(mixed / "1.jpg")
    shutil.copy(given / "tom_hanks.png", mixed / "2.png")
    (folder / "empty").mkdir()
    many = folder / "many"
    many.mkdir()
    for n in range(MAX_SELFIES + 1):
        portrait.save(many / f"{n}.jpg")
    shutil.copy(given / "tom_hanks.png", folder / "hanks.png")  # a file: one selfie
    out = tmp_path / "results.csv"
    result = runner.invoke(cli, ["cohort", str(folder), "--index", str(built_index), "--out",
                                 str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = {row["participant"]: row for row in _read(out.with_name("results.summary.csv"))}
    assert sorted(summary) == ["empty", "hanks", "many", "mixed", "yao"]
    assert (summary["yao"]["status"], summary["yao"]["selfies"]) == ("ok", "3")
    assert summary["yao"]["photos_found"] == "4"
    assert {row["image"] for row in _read(out) if row["participant"] == "yao"} == YAO_PHOTOS
    assert summary["hanks"]["selfies"] == "1" and summary["hanks"]["status"] == "ok"
    assert summary["mixed"]["status"] == "different_people"
    assert summary["mixed"]["reason"].startswith("Selfie 2 ")
    assert summary["mixed"]["reason"].endswith("(selfie 2 is 2.png)")  # the file, by name
    assert summary["empty"]["status"] == "no_selfie"
    assert summary["many"]["status"] == "too_many_selfies"
    assert f"at most {MAX_SELFIES}" in summary["many"]["reason"]
    # Each participant at their own template's default, recomputed from the calibration file.
    calibration, faces = shipped(), _faces(built_index)
    for name, k in (("yao", 3), ("hanks", 1)):
        assert float(summary[name]["threshold"]) == template_default(calibration, faces, k)
    # A threshold under the floor of a 3-selfie template, not of one selfie's: refused for
    # the folder of three only.
    below = template_lowest(calibration, faces, 1.0, 3) - 0.001
    assert below >= lowest(calibration, faces, 1.0)
    low = runner.invoke(cli, ["cohort", str(folder), "--index", str(built_index), "--out",
                              str(out), "--threshold", f"{below:.3f}", "--device", "cpu"])
    assert low.exit_code == 0, low.output
    summary = {row["participant"]: row for row in _read(out.with_name("results.summary.csv"))}
    assert summary["yao"]["status"] == "search_refused"
    assert "below this index's floor" in summary["yao"]["reason"]
    assert summary["hanks"]["status"] == "ok"
