"""Completion markers without Lightning: what inference and serving rely on to pick a checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from lit_medxchat.training.completion import marker_path, newest_checkpoint, write_completion_marker


def _write(folder, step: int, complete: bool) -> os.PathLike:
    path = folder / f"epoch=0-step={step}.ckpt"
    path.write_bytes(bytes([step]) * 64)
    if complete:
        write_completion_marker(path, world_size=1, global_step=step, epoch=0)
    return path


def test_completion_imports_without_lightning():
    code = ("import sys, lit_medxchat.training.completion; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'torch')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_newest_checkpoint_prefers_the_newest_complete_one_over_a_newer_torn_one(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    _write(folder, 2, complete=True)
    four = _write(folder, 4, complete=True)
    time.sleep(0.01)
    _write(folder, 6, complete=False)  # killed before its marker
    assert newest_checkpoint(tmp_path) == four


def test_newest_checkpoint_falls_back_to_modification_time_without_markers(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    first = _write(folder, 4, complete=False)
    second = _write(folder, 2, complete=False)
    os.utime(first, (1, 1))
    assert newest_checkpoint(tmp_path) == second
    assert not marker_path(second).exists()


def test_newest_checkpoint_names_the_empty_folder_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoints holds no \*.ckpt: train the run first"):
        newest_checkpoint(tmp_path)
