"""The import layers of docs/architecture.md hold: `lint-imports` over setup.cfg's contracts.

The contracts cover imports inside functions too, so a lazy upward import fails here as well. A
second test plants an upward import in a copy of the package to show the check can fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lit_medxchat", "datamodules", "callbacks")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    script = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", script, "--config", str(cwd / "setup.cfg"), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
        timeout=300,
    )


def test_every_import_points_down_and_cores_run_without_lightning() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken." in result.stdout, result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.yaml", "*.json"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    planted = tmp_path / "lit_medxchat" / "core" / "constants.py"
    planted.write_text(planted.read_text() + "\n\ndef _upward():\n    from lit_medxchat.demo import run  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "lit_medxchat.core.constants -> lit_medxchat.demo.run" in result.stdout

