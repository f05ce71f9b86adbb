"""The import rules of ARCHITECTURE.md, as import-linter contracts (pyproject.toml), checked on
an installed copy of the package: the top-level folders are mapped onto faceaudit.* by
package-dir, so the source tree does not show the import graph that users run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as pip installs it (no dependencies: they are the venv's)."""
    target = tmp_path_factory.mktemp("installed")
    build = tmp_path_factory.mktemp("source")
    # A copy of the source, so that the build leaves nothing in the checkout.
    shutil.copytree(ROOT, build / "src", ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "tests", "benchmarks"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(build / "src")], check=True)
    return target


def lint_imports(installed: Path) -> subprocess.CompletedProcess[str]:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    return subprocess.run([lint, "--no-cache", str(PYPROJECT)], capture_output=True,
                          text=True, cwd=installed, env={"PYTHONPATH": str(installed),
                                                        "PATH": "/usr/bin:/bin"})


def test_the_installed_package_keeps_every_import_rule(installed: Path) -> None:
    run = lint_imports(installed)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " broken" in run.stdout and "0 broken" in run.stdout
    # Every room is in the graph (a mapping lost would make the check vacuous).
    for room in ("cli", "service", "research", "removals", "indexer", "models"):
        assert (installed / "faceaudit" / room / "__init__.py").is_file()


@pytest.mark.parametrize(("module", "imports", "contract"), [
    ("models/_probe.py", "faceaudit.indexer.search", "Rooms are layered"),
    ("service/_probe.py", "faceaudit.research.cohort", "Rooms are layered"),
    ("indexer/_probe.py", "faceaudit.cli", "Rooms are layered"),
    ("service/_probe.py", "faceaudit.removals", None),  # an arrow allowed: still green
    ("cli/serve_probe.py", "faceaudit.cli.index", None),  # a new module: no rule names it
    ("service/_probe.py", "faceaudit.indexer.build", "The service reads indexes"),
])
def test_a_broken_rule_fails_the_check(installed: Path, tmp_path: Path, module: str,
                                       imports: str, contract: str | None) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(installed, broken)
    probe = broken / "faceaudit" / module
    probe.write_text(f"import {imports}\n")
    run = lint_imports(broken)
    if contract is None:
        assert run.returncode == 0, run.stdout + run.stderr
        return
    assert run.returncode != 0
    assert f"{contract}" in run.stdout and "BROKEN" in run.stdout, run.stdout
    assert module.removesuffix(".py").replace("/", ".") in run.stdout, run.stdout
