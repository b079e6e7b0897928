"""The installable package: exactly the user's three import packages, a console script, no pinned torch build."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


PACKAGES = ("lit_medxchat", "datamodules", "callbacks")
# setuptools' notice that a data folder (configs/tiny, architectures/...) is not in `packages`.
UNLISTED_PACKAGE_WARNING = "is absent from the `packages` configuration"


def _project_copy(tmp_path: Path) -> Path:
    """The project's sources without build leftovers: a stale `build/lib` would leak removed modules into wheels."""
    project = tmp_path / "project"
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        project.mkdir(exist_ok=True)
        shutil.copy2(ROOT / name, project / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, project / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return project


def _source_files(project: Path) -> set[str]:
    return {
        path.relative_to(project).as_posix()
        for package in PACKAGES
        for path in (project / package).rglob("*")
        if path.is_file()
    }


@pytest.fixture(scope="module")
def wheel_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(project copy, wheel, the build's console output) of a non-editable `pip wheel --no-deps .`."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    project = _project_copy(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w", str(tmp_path), "."],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = tmp_path.glob("lit_medxchat-*.whl")
    return project, wheel, result.stdout + result.stderr


def test_wheel_installs_exactly_the_three_packages(wheel_build: tuple[Path, Path, str]) -> None:
    _, wheel, _ = wheel_build
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == set(PACKAGES)
    assert not any(name.startswith(("tests/", "cluster/", "benchmarks/")) for name in names)
    # Shipped configs travel with the package so `lit-medxchat fit --config tiny/...` works after `pip install`.
    assert any(name.startswith("lit_medxchat/configs/") and name.endswith(".yaml") for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "lit-medxchat = lit_medxchat.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_wheel_ships_every_source_and_data_file_and_nothing_else(wheel_build: tuple[Path, Path, str]) -> None:
    """Every YAML config and architecture JSON/README is shipped, and no module that is not in the sources."""
    project, wheel, _ = wheel_build
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in name}
    sources = _source_files(project)
    assert shipped == sources, {"not shipped": sorted(sources - shipped), "not in sources": sorted(shipped - sources)}
    data = {name for name in sources if not name.endswith(".py")}
    assert any(name.startswith("lit_medxchat/architectures/") and name.endswith(".json") for name in data)
    assert {f"lit_medxchat/configs/{scale}/chat.yaml" for scale in ("tiny", "demo", "paper")} <= data


def test_wheel_build_prints_no_unlisted_package_warning(wheel_build: tuple[Path, Path, str]) -> None:
    _, _, output = wheel_build
    assert UNLISTED_PACKAGE_WARNING not in output, output[-3000:]


def test_editable_build_prints_no_unlisted_package_warning(tmp_path: Path) -> None:
    """The hook `pip install --no-deps --no-build-isolation -e .` runs, without touching this environment."""
    project = _project_copy(tmp_path)
    hook = "import sys; from setuptools import build_meta; print(build_meta.build_editable(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-c", hook, str(tmp_path / "dist")], cwd=project, capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert UNLISTED_PACKAGE_WARNING not in output, output[-3000:]
    assert result.stdout.strip().splitlines()[-1].endswith(".whl")


def test_torch_is_a_floor_not_a_pinned_build() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    requirements = [line.strip() for line in config["options"]["install_requires"].splitlines() if line.strip()]
    (torch_requirement,) = [r for r in requirements if re.split(r"[<>=!~\[ ]", r)[0] == "torch"]
    assert ">=" in torch_requirement and "+cpu" not in torch_requirement and "==" not in torch_requirement


def test_cli_lists_every_command_and_rejects_unknown_ones() -> None:
    result = subprocess.run([sys.executable, "-m", "lit_medxchat.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("data synth", "data prepare", "fit", "chat", "export", "demo"):
        assert command in result.stdout
    result = subprocess.run([sys.executable, "-m", "lit_medxchat.cli", "frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown command 'frobnicate'" in result.stderr
