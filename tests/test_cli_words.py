"""Words that agree, through the CLI: a build's counts add up and say "downloaded" only for a
download; `cohort` counts in the singular when it should; every `--help` renders without type
placeholders or lines broken mid-sentence; a second `demo` stops on its port before building;
the test client imports without a deprecation warning."""

from __future__ import annotations

import inspect
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from faceaudit.cli import app
from faceaudit.demo import vectron_image
from tests.img2dataset_fixtures import write_webdataset_shard

runner = CliRunner()
IMAGES_LINE = re.compile(r"^(\d+) images?: (\d+) with faces \((\d+) faces?[^)]*\), (\d+) "
                         r"without a face, (\d+) failed$", re.MULTILINE)


def images_add_up(output: str) -> tuple[int, int, int, int]:
    """(images, with faces, without a face, failed) from a build's summary; asserts they add
    up."""
    found = IMAGES_LINE.search(output)
    assert found, output
    images, with_faces, _, no_face, failed = (int(n) for n in found.groups())
    assert images == with_faces + no_face + failed, output
    return images, with_faces, no_face, failed


def test_a_folder_build_counts_add_up_and_say_nothing_of_downloads(
        collection: tuple[Path, Path], tmp_path: Path) -> None:
    source = tmp_path / "photos"
    shutil.copytree(collection[0] / "street", source)
    (source / "truncated.jpg").write_bytes((source / "gdp.jpg").read_bytes()[:3000])
    result = runner.invoke(app, ["index", str(source), "--out", str(tmp_path / "ix"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    # group, group with Yao behind, gdp: faces; the rocket and the sky: none; one truncated.
    assert images_add_up(result.stdout) == (6, 3, 2, 1)
    assert "source: 6 files\n" in result.stdout
    assert "download" not in result.stdout
    assert "this run: 6 processed;" in result.stdout

    (source / "sky.png").unlink()
    result = runner.invoke(app, ["index", str(source), "--out", str(tmp_path / "ix"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    images, *_ = images_add_up(result.stdout)
    assert images == 5
    assert ("this run: 0 processed, 5 unchanged since the last build, 1 gone from the source;"
            in result.stdout)


def test_a_download_says_what_was_downloaded(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    photo = vectron_image("yaoming.jpg").read_bytes()
    write_webdataset_shard(shards, 0, [("https://example.org/1.jpg", photo, {})],
                           [("https://example.org/2.jpg", "HTTP Error 404: Not Found")])
    result = runner.invoke(app, ["index", str(shards), "--out", str(tmp_path / "ix"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "source: 2 rows, 1 downloaded, 1 not downloaded\n" in result.stdout
    assert images_add_up(result.stdout) == (1, 1, 0, 0)


def test_cohort_counts_one_dataset_in_the_singular(
        built_index: Path, collection: tuple[Path, Path], tmp_path: Path) -> None:
    selfies = tmp_path / "selfies"
    selfies.mkdir()
    shutil.copy(collection[1] / "yaoming.jpg", selfies / "p001.jpg")
    result = runner.invoke(app, ["cohort", str(selfies), "--index", str(built_index),
                                 "--out", str(tmp_path / "results.csv"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "1 participant: 1 searched;" in result.stdout
    assert re.search(r"found in \d+ photos of 1 dataset;", result.stdout), result.stdout


def commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group under ``group``, with the words that call it."""
    yield path, group
    for name, command in sorted(getattr(group, "commands", {}).items()):
        yield from commands(command, (*path, name))


def help_texts(command: Any) -> list[str]:
    """The help of a command (its first paragraph) and of each of its parameters, each as one
    line: what --help must show unbroken when the terminal is wide enough."""
    texts = [inspect.cleandoc(command.help or "").split("\n\n")[0]]
    texts += [param.help for param in command.params if getattr(param, "help", None)]
    texts += [inspect.cleandoc(sub.help or "").split("\n\n")[0]  # a group's list
              for sub in getattr(command, "commands", {}).values()]
    return [" ".join(text.replace("`", "").split()) for text in texts if text]


ALL_COMMANDS = list(commands(typer.main.get_command(app)))


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS,
                         ids=[" ".join(path) or "faceaudit" for path, _ in ALL_COMMANDS])
def test_every_help_names_values_and_keeps_sentences_whole(
        path: tuple[str, ...], command: Any) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert not re.search(r"<[a-z][\w\[\], ]*>", result.stdout), result.stdout  # <bool>, <path>
    assert max(len(line) for line in result.stdout.splitlines()) <= 100

    # Wide enough for every text to fit on one line: each must be on one line, not broken
    # where its source had a line break.
    wide = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "1000"})
    lines = [" ".join(line.replace("│", " ").split()) for line in wide.stdout.splitlines()]
    for text in help_texts(command):
        assert any(text in line for line in lines), f"broken or missing: {text!r}"


def test_a_second_demo_stops_on_its_port_before_building(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"),
                                     "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "--port" in result.stderr
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert not (tmp_path / "demo").exists()  # nothing was built


def test_the_test_client_imports_without_a_warning() -> None:
    done = subprocess.run([sys.executable, "-W", "error", "-c",
                           "import fastapi.testclient"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
