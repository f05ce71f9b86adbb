"""Settings checked before any work (`faceaudit index`, `eval`, `build-index`): a value outside
the range it works in is one line and exit 2, and nothing is touched; a build that found no
faces does not replace an index that has some, unless --allow-empty."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from faceaudit.cli import app
from faceaudit.indexer.search import FaceIndex
from faceaudit.indexer.staging import staging_folder

runner = CliRunner()


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture()
def indexed(collection: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """(a source of two portraits, the index built from it)."""
    source = tmp_path / "portraits"
    source.mkdir()
    for name in ("hanks.jpg", "yao_flipped.jpg"):
        shutil.copy(collection[0] / "portraits" / name, source / name)
    out = tmp_path / "ix"
    result = runner.invoke(app, ["index", str(source), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert FaceIndex(out).size == 2
    return source, out


@pytest.mark.parametrize(("flags", "named"), [
    (["--det-size", "7"], "--det-size"),  # the issue's: indexed 1 face and replaced the index
    (["--det-size", "1000"], "--det-size"),  # not a multiple of 32
    (["--det-size", "8192"], "--det-size"),
    (["--det-threshold", "2"], "--det-threshold"),  # the issue's: 0 faces, index replaced
    (["--det-threshold", "0"], "--det-threshold"),
    (["--min-face", "0"], "--min-face"),
    (["--workers", "0"], "--workers"),  # the issue's: a traceback and .INDEX.building left
    (["--workers", "100000"], "--workers"),
    (["--threads", "0"], "--threads"),
    (["--ray", "--unit-size", "0"], "--unit-size"),  # refused before Ray is started
])
def test_a_bad_setting_is_one_line_and_touches_nothing(
        indexed: tuple[Path, Path], tmp_path: Path, flags: list[str], named: str) -> None:
    source, out = indexed
    before, beside = files_of(out), sorted(tmp_path.iterdir())
    state = tmp_path / "state"
    result = runner.invoke(app, ["index", str(source), "--out", str(out), "--device", "cpu",
                                 "--state-dir", str(state), *flags])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {named}: "), result.stderr
    assert files_of(out) == before
    assert not staging_folder(out.resolve()).exists() and not state.exists()
    assert sorted(tmp_path.iterdir()) == beside


def test_eval_checks_its_detection_settings_too(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path), "--det-size", "7", "--device", "cpu"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --det-size: ") and result.stderr.count("\n") == 1


def test_an_index_without_faces_replaces_one_with_faces_only_if_allowed(
        indexed: tuple[Path, Path], collection: tuple[Path, Path], tmp_path: Path) -> None:
    source, out = indexed
    for path in source.iterdir():  # the same dataset, now photos without a face
        path.unlink()
    for name in ("sky.png", "no_face_rocket.jpg"):
        shutil.copy(collection[0] / "street" / name, source / name)
    before = files_of(out)
    command = ["index", str(source), "--out", str(out), "--device", "cpu"]

    result = runner.invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "--allow-empty" in result.stderr and "has 2" in result.stderr
    assert result.stderr.count("\n") == 1
    assert files_of(out) == before  # the index with faces is still there, untouched
    assert FaceIndex(out).size == 2

    # build-index publishes the kept scan under the same rule.
    result = runner.invoke(app, ["build-index", "--out", str(out)])
    assert result.exit_code == 2 and "--allow-empty" in result.stderr
    assert files_of(out) == before
    result = runner.invoke(app, ["build-index", "--out", str(out), "--allow-empty"])
    assert result.exit_code == 0, result.output
    assert FaceIndex(out).size == 0
    assert "2 images: 0 with faces (0 faces), 2 without a face, 0 failed" in result.stdout

    # An empty index over an empty one needs no flag.
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    assert FaceIndex(out).size == 0
