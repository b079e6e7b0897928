"""In-process checks of completion markers, `last` resolution, CLI argv rewriting and throughput logging."""

from __future__ import annotations

import os

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from toy import ToyDataModule, ToyModel

from lit_medxchat.training.checkpointing import (
    CompleteCheckpoint,
    IncompleteCheckpointError,
    find_last_complete_checkpoint,
    marker_path,
    resolve_ckpt_path_args,
    verify_checkpoint,
    write_completion_marker,
)
from lit_medxchat.training.throughput import MedXChatThroughput
from lit_medxchat.training.wandb_run import RESUME_ENV


def _checkpoint(folder, step: int, complete: bool = True):
    path = folder / f"epoch=0-step={step}.ckpt"
    torch.save({"step": step, "w": torch.full((8,), float(step))}, path)
    if complete:
        write_completion_marker(path, world_size=1, global_step=step, epoch=0)
    return path


def test_last_is_the_newest_complete_checkpoint_and_names_what_it_skips(tmp_path, caplog):
    _checkpoint(tmp_path, 2)
    four = _checkpoint(tmp_path, 4)
    _checkpoint(tmp_path, 6, complete=False)  # killed while being written: no marker
    assert find_last_complete_checkpoint(tmp_path) == four
    assert "epoch=0-step=6.ckpt has no completion marker" in caplog.text
    with pytest.raises(IncompleteCheckpointError, match="no completion marker"):
        verify_checkpoint(tmp_path / "epoch=0-step=6.ckpt")


def test_truncated_file_is_named_and_skipped(tmp_path):
    two = _checkpoint(tmp_path, 2)
    four = _checkpoint(tmp_path, 4)
    four.write_bytes(four.read_bytes()[:100])
    with pytest.raises(IncompleteCheckpointError, match=r"epoch=0-step=4.ckpt has 100 bytes"):
        verify_checkpoint(four)
    assert find_last_complete_checkpoint(tmp_path) == two
    marker_path(two).unlink()
    assert find_last_complete_checkpoint(tmp_path) is None


def test_an_explicit_checkpoint_without_marker_is_used_with_a_warning_but_a_corrupt_one_stops(tmp_path, caplog):
    plain = _checkpoint(tmp_path, 2, complete=False)  # e.g. written by a stock ModelCheckpoint
    assert resolve_ckpt_path_args(["fit", "--ckpt_path", str(plain)]) == ["fit", "--ckpt_path", str(plain)]
    assert "has no completion marker" in caplog.text
    marked = _checkpoint(tmp_path, 4)
    marked.write_bytes(marked.read_bytes()[:-1] + b"x")
    with pytest.raises(IncompleteCheckpointError, match="corrupt"):
        resolve_ckpt_path_args(["fit", f"--ckpt_path={marked}"])


def test_cli_ckpt_path_last_is_rewritten_from_the_config(tmp_path, monkeypatch):
    monkeypatch.delenv(RESUME_ENV, raising=False)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    config = tmp_path / "config.yaml"
    callback = {"class_path": "lit_medxchat.training.checkpointing.CompleteCheckpoint",
                "init_args": {"dirpath": str(checkpoints)}}
    config.write_text(yaml.safe_dump({"trainer": {"callbacks": [callback]}}))
    argv = ["fit", "--config", str(config), "--ckpt_path", "last"]
    assert resolve_ckpt_path_args(argv) == ["fit", "--config", str(config)]  # nothing yet: start from scratch
    _checkpoint(checkpoints, 2)
    newest = _checkpoint(checkpoints, 4)
    assert resolve_ckpt_path_args(argv) == ["fit", "--config", str(config), "--ckpt_path", str(newest)]
    assert os.environ[RESUME_ENV] == str(newest)  # the W&B logger continues this checkpoint's run


def _fit(tmp_path, callbacks, steps: int = 4, ckpt_path=None, logger=False):
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=logger, callbacks=callbacks,
                      enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                      default_root_dir=tmp_path)
    trainer.fit(ToyModel(), ToyDataModule(), ckpt_path=ckpt_path)
    return trainer


def test_complete_checkpoint_marks_its_files_and_last_skips_a_torn_one(tmp_path):
    dirpath = tmp_path / "checkpoints"
    _fit(tmp_path, [CompleteCheckpoint(dirpath=dirpath, every_n_train_steps=2, save_top_k=-1)])
    saved = sorted(dirpath.glob("*.ckpt"))
    assert [p.name for p in saved] == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt"]
    assert all(marker_path(p).exists() for p in saved)
    assert "rng_states_per_rank" in torch.load(saved[-1], weights_only=True)
    marker_path(saved[-1]).unlink()  # as if killed before the marker
    trainer = _fit(tmp_path, [CompleteCheckpoint(dirpath=dirpath, every_n_train_steps=2, save_top_k=-1)], steps=6,
                   ckpt_path="last")
    assert trainer.ckpt_path.endswith("epoch=0-step=2.ckpt")


def test_throughput_logs_samples_per_second_and_mfu_from_counted_flops(tmp_path):
    monitor = MedXChatThroughput(available_flops=1e9, window_size=2)
    trainer = _fit(tmp_path, [monitor], steps=4, logger=CSVLogger(tmp_path))
    # batch 4: forward 2*4*(16*64 + 64*64 + 64*1); backward only where gradients flow: head weights (64*64, 64*1)
    # and the input of the last layer (64*1). The frozen backbone gets none: FLOPs are counted, not estimated.
    expected = 2 * 4 * (16 * 64 + 64 * 64 + 64) + 2 * 4 * (64 * 64 + 64 + 64)
    assert monitor.measured_flops_per_batch == expected
    metrics = trainer.logged_metrics
    assert metrics["train/device/samples_per_sec"] > 0
    assert 0 < metrics["train/device/mfu"] < 1


def test_cli_last_searches_lightning_version_folders_of_the_root_dir(tmp_path, monkeypatch):
    """Without a `dirpath`, Lightning writes into ROOT/lightning_logs/version_N/checkpoints: `last` looks there too."""
    monkeypatch.delenv(RESUME_ENV, raising=False)
    old = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    new = tmp_path / "lightning_logs" / "version_1" / "checkpoints"
    old.mkdir(parents=True)
    new.mkdir(parents=True)
    _checkpoint(old, 2)
    newest = _checkpoint(new, 6)
    _checkpoint(new, 8, complete=False)
    argv = ["fit", "--trainer.default_root_dir", str(tmp_path), "--ckpt_path=last"]
    assert resolve_ckpt_path_args(argv)[-1] == f"--ckpt_path={newest}"
