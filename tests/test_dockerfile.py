"""The Docker image builds from any checkout: the Dockerfile's COPY and RUN steps, run in a
scratch folder, install a working ``faceaudit`` (no Docker engine runs in CI).

What stands in for the image: each absolute path the Dockerfile names (``WORKDIR``, a ``COPY``
destination) is a folder under ``tmp_path``; the image's Python is a fresh virtual environment
whose ``pip`` and ``python`` come first on ``PATH``; ``COPY`` honours ``.dockerignore``; the
system set-up step (``apt-get``, ``useradd``) is skipped. The steps run verbatim, with the
build arguments' defaults (the CPU variant).

Why the fresh environment also sees this test environment's site-packages (a ``.pth`` line):
the dependency step then resolves every requirement read from pyproject.toml without
downloading 1.5 GB again, while still running as written (a requirement pyproject lists that
is not installed would still be fetched, and a malformed list still fails). The project itself
is built from the copied source into the fresh environment, whose own site-packages come
first, and is checked to be imported from there: every package of the source tree, the
package data, and ``faceaudit --help``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_SETUP = re.compile(r"\b(apt-get|useradd)\b")

pytestmark = pytest.mark.image


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each step, continuation lines joined as Docker joins them
    (comment lines inside a continued instruction dropped)."""
    steps: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.splitlines():
        if line.lstrip().startswith("#") or (not pending and not line.strip()):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        text = (pending + line).strip()
        pending = ""
        name, _, arguments = text.partition(" ")
        steps.append((name.upper(), arguments.strip()))
    return steps


def ignore_rules(text: str) -> list[tuple[re.Pattern[str], bool]]:
    """.dockerignore patterns as (regex over a relative path, excludes?), in order."""
    rules = []
    for line in text.splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        rules.append((re.compile(regex), not keep))
    return rules


def ignored(relative: str, rules: list[tuple[re.Pattern[str], bool]]) -> bool:
    """Docker's rule: the last pattern matching the path, or a folder above it, decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for regex, excludes in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = excludes
    return excluded


def copy_context(source: str, destination: Path, rules: list[tuple[re.Pattern[str], bool]]
                 ) -> None:
    """``COPY source destination`` from the build context (this checkout)."""
    origin = (ROOT / source).resolve()
    if origin.is_file():
        target = destination / origin.name if destination.is_dir() else destination
        shutil.copy2(origin, target)
        return
    prune = not any(not excludes for _, excludes in rules)  # no "!" exception to look for
    for folder, subfolders, files in os.walk(origin):
        relative_folder = Path(folder).relative_to(ROOT).as_posix().removeprefix(".")
        if prune:
            subfolders[:] = [s for s in subfolders
                             if not ignored(f"{relative_folder}/{s}".lstrip("/"), rules)]
        for name in files:
            relative = f"{relative_folder}/{name}".lstrip("/")
            if not ignored(relative, rules):
                target = destination / Path(folder).relative_to(origin) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(folder) / name, target, follow_symlinks=False)


def scratch_python(folder: Path) -> Path:
    """A fresh virtual environment standing in for the image's Python: ``python`` and a
    ``pip`` launcher in its bin folder, this environment's packages visible behind its own."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(folder)
    purelib = Path(sysconfig.get_paths(vars={"base": str(folder), "platbase": str(folder)})
                   ["purelib"])
    (purelib / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    launcher = folder / "bin" / "pip"
    launcher.write_text(f"#!{folder / 'bin' / 'python'}\nimport sys\n"
                        "from pip._internal.cli.main import main\nsys.exit(main())\n")
    launcher.chmod(0o755)
    return purelib


def run_dockerfile(scratch: Path, environment: dict[str, str]) -> dict[str, list[str]]:
    """Run the Dockerfile's steps under ``scratch``; returns the other instructions' values."""
    rules = ignore_rules((ROOT / ".dockerignore").read_text(encoding="utf-8"))
    workdir = scratch
    declared: dict[str, list[str]] = {}
    for name, arguments in instructions((ROOT / "Dockerfile").read_text(encoding="utf-8")):
        if name == "ARG":
            key, _, default = arguments.partition("=")
            environment[key] = default
        elif name == "ENV":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                environment[key] = value
                declared.setdefault("ENV", []).append(pair)
        elif name == "WORKDIR":
            workdir = scratch / arguments.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif name == "COPY":
            *sources, destination = shlex.split(arguments)
            assert not any(s.startswith("--") for s in sources), (
                f"COPY {arguments}: this test runs COPY from the build context only")
            target = (scratch / destination.lstrip("/") if destination.startswith("/")
                      else workdir / destination)
            if destination.endswith("/") or destination == "." or len(sources) > 1:
                target.mkdir(parents=True, exist_ok=True)
            for source in sources:
                copy_context(source, target, rules)
        elif name == "RUN":
            if SYSTEM_SETUP.search(arguments):
                assert "pip" not in arguments, "install Python packages outside the system step"
                declared.setdefault("SYSTEM", []).append(arguments)
                continue
            done = subprocess.run(["sh", "-c", arguments], cwd=workdir, env=environment,
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, (
                f"RUN {arguments}\nexit {done.returncode}\n{done.stdout[-3000:]}\n"
                f"{done.stderr[-3000:]}")
        else:
            declared.setdefault(name, []).append(arguments)
    return declared


def source_packages() -> set[str]:
    """Every package of this checkout's source tree, by the folders pyproject maps."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "tool"]["setuptools"]["package-dir"]
    packages = set()
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            packages.add(".".join((package, *parts)))
    return packages


def test_the_dockerfile_steps_install_a_working_faceaudit(tmp_path: Path) -> None:
    scratch = tmp_path / "image"
    python_home = scratch / "usr" / "local"
    purelib = scratch_python(python_home)
    environment = {**os.environ, "PATH": f"{python_home / 'bin'}:{os.environ['PATH']}",
                   "HOME": str(scratch / "root"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    environment.pop("PYTHONPATH", None)
    declared = run_dockerfile(scratch, environment)

    # What the running image needs beyond the install: a non-root user, the state volume that
    # removal requests are kept in, and a health check.
    assert declared["USER"] and declared["USER"][-1] not in ("root", "0")
    assert "/state" in " ".join(declared.get("VOLUME", []))
    assert "FACEAUDIT_STATE_DIR=/state" in declared["ENV"]
    assert declared.get("HEALTHCHECK") and len(declared.get("SYSTEM", [])) == 1

    # Every package of the source tree and the package data pyproject declares were installed
    # into the fresh environment, and that copy is the one imported.
    installed = purelib / "faceaudit"
    for package in sorted(source_packages()):
        init = purelib.joinpath(*package.split(".")) / "__init__.py"
        assert init.is_file(), f"{package} is missing from the installed package"
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"]["package-data"]
    for package, patterns in data.items():
        for pattern in patterns:
            assert list(purelib.joinpath(*package.split(".")).glob(pattern)), (
                f"{package}: no {pattern} installed")
    script = ("import faceaudit.cli, faceaudit.service.app, faceaudit.indexer.readers; "
              "print(faceaudit.cli.__file__)")
    done = subprocess.run([str(python_home / "bin" / "python"), "-c", script],
                          cwd=scratch / "app", env=environment, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(installed), done.stdout

    done = subprocess.run([str(python_home / "bin" / "faceaudit"), "--help"],
                          cwd=scratch / "app", env={**environment, "COLUMNS": "100"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "faceaudit [OPTIONS] COMMAND" in done.stdout and "serve" in done.stdout
