"""In-process checks of completion markers, `last` resolution, CLI argv rewriting, resumes and throughput logging."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from toy import ToyDataModule, ToyModel

from lit_medxchat.training.checkpoint_callback import CompleteCheckpoint
from lit_medxchat.training.cli import build_cli
from lit_medxchat.training.completion import (
    IncompleteCheckpointError,
    find_last_complete_checkpoint,
    marker_path,
    verify_checkpoint,
    write_completion_marker,
)
from lit_medxchat.training.resume_args import resolve_ckpt_path_args
from lit_medxchat.training.throughput import MedXChatThroughput


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


def test_cli_ckpt_path_last_is_rewritten_from_the_config(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    config = tmp_path / "config.yaml"
    callback = {"class_path": "lit_medxchat.training.checkpoint_callback.CompleteCheckpoint",
                "init_args": {"dirpath": str(checkpoints)}}
    config.write_text(yaml.safe_dump({"trainer": {"callbacks": [callback]}}))
    argv = ["fit", "--config", str(config), "--ckpt_path", "last"]
    assert resolve_ckpt_path_args(argv) == ["fit", "--config", str(config)]  # nothing yet: start from scratch
    _checkpoint(checkpoints, 2)
    newest = _checkpoint(checkpoints, 4)
    assert resolve_ckpt_path_args(argv) == ["fit", "--config", str(config), "--ckpt_path", str(newest)]


def _fit(tmp_path, callbacks, steps: int = 4, ckpt_path=None, logger=False):
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=logger, callbacks=callbacks,
                      enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                      default_root_dir=tmp_path)
    trainer.fit(ToyModel(), ToyDataModule(), ckpt_path=ckpt_path, weights_only=True)
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


def test_cli_last_searches_lightning_version_folders_of_the_root_dir(tmp_path):
    """Without a `dirpath`, Lightning writes into ROOT/lightning_logs/version_N/checkpoints: `last` looks there too."""
    old = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    new = tmp_path / "lightning_logs" / "version_1" / "checkpoints"
    old.mkdir(parents=True)
    new.mkdir(parents=True)
    _checkpoint(old, 2)
    newest = _checkpoint(new, 6)
    _checkpoint(new, 8, complete=False)
    argv = ["fit", "--trainer.default_root_dir", str(tmp_path), "--ckpt_path=last"]
    assert resolve_ckpt_path_args(argv)[-1] == f"--ckpt_path={newest}"


def _toy_cli_argv(root: Path, steps: int) -> list[str]:
    return ["fit", "--model", "toy.ToyModel", "--data", "toy.ToyDataModule", "--trainer.accelerator", "cpu",
            "--trainer.devices", "1", "--trainer.max_steps", str(steps), "--trainer.default_root_dir", str(root),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.callbacks+=lit_medxchat.training.checkpoint_callback.CompleteCheckpoint",
            "--trainer.callbacks.every_n_train_steps", "2", "--trainer.callbacks.save_top_k", "-1"]


def test_cli_resumes_from_its_own_checkpoint_reading_it_with_weights_only(tmp_path, monkeypatch):
    """`lit-medxchat fit --ckpt_path last` continues the run, and every checkpoint read refuses pickled objects."""
    build_cli([*_toy_cli_argv(tmp_path, 4), "--trainer.logger", "false"])
    newest = tmp_path / "checkpoints" / "epoch=0-step=4.ckpt"
    assert marker_path(newest).exists()
    weights_only_of_loads: list[object] = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        weights_only_of_loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    argv = resolve_ckpt_path_args([*_toy_cli_argv(tmp_path, 6), "--trainer.logger", "false", "--ckpt_path", "last"])
    cli = build_cli(argv)
    assert cli.trainer.ckpt_path == str(newest)
    assert cli.trainer.global_step == 6
    assert weights_only_of_loads and all(value is True for value in weights_only_of_loads), weights_only_of_loads


def test_cli_hands_the_resumed_checkpoint_to_the_wandb_logger(tmp_path, monkeypatch):
    """The W&B logger learns which checkpoint's run to continue from the parsed `ckpt_path`, not the environment."""
    from lit_medxchat.training.wandb_run import ContinuingWandbLogger

    newest = _checkpoint(tmp_path, 4)
    calls: list[dict] = []

    @functools.wraps(Trainer.fit)  # LightningCLI reads the options of `fit` from its signature
    def recording_fit(self, *args, **kwargs):
        calls.append(kwargs)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    logger = ["--trainer.logger", "lit_medxchat.training.wandb_run.ContinuingWandbLogger",
              "--trainer.logger.save_dir", str(tmp_path / "wandb"), "--trainer.logger.offline", "true"]
    cli = build_cli([*_toy_cli_argv(tmp_path, 6), *logger, "--ckpt_path", str(newest)])
    (wandb,) = [lg for lg in cli.trainer.loggers if isinstance(lg, ContinuingWandbLogger)]
    assert wandb.resume_checkpoint == str(newest)
    assert calls[0]["ckpt_path"] == str(newest) and calls[0]["weights_only"] is True
    fresh = build_cli([*_toy_cli_argv(tmp_path / "fresh", 6), *logger])
    assert fresh.trainer.loggers[0].resume_checkpoint is None


def test_checkpoint_stores_what_the_loggers_ask_for(tmp_path):
    """`CompleteCheckpoint` stores loggers' `checkpoint_fields()` in the file and the marker, knowing no logger."""
    from lit_medxchat.training.completion import read_marker

    class RunIdLogger(CSVLogger):
        def checkpoint_fields(self) -> dict:
            return {"wandb": {"id": "abc123", "project": "p", "last_step": 3}}

    dirpath = tmp_path / "checkpoints"
    _fit(tmp_path, [CompleteCheckpoint(dirpath=dirpath, every_n_train_steps=2)], steps=2,
         logger=RunIdLogger(tmp_path))
    (saved,) = dirpath.glob("*.ckpt")
    assert torch.load(saved, weights_only=True)["wandb"]["id"] == "abc123"
    assert read_marker(saved)["extra"]["wandb"]["id"] == "abc123"
