"""The installable package: exactly the user's three import packages, a console script, no pinned torch build."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_exactly_the_three_packages(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("lit_medxchat-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"lit_medxchat", "datamodules", "callbacks"}
    assert not any(name.startswith(("tests/", "cluster/", "benchmarks/")) for name in names)
    # Shipped configs travel with the package so `lit-medxchat fit --config tiny/...` works after `pip install`.
    assert any(name.startswith("lit_medxchat/configs/") and name.endswith(".yaml") for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "lit-medxchat = lit_medxchat.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


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
