"""`lit-medxchat fit` killed with SIGKILL and restarted with `--ckpt_path last`: same losses, same W&B run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from leftovers import end_leftovers

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def phantom_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lit_medxchat.inference.prepare_cli import main as prepare_main
    from lit_medxchat.synth.cli import main as synth_main

    root = tmp_path_factory.mktemp("cli-resume-data")
    synth = ["--out", str(root / "mimic"), "--num-subjects", "8", "--seed", "3", "--image-size", "64", "--phantom",
             "--no-progress"]
    assert synth_main(synth) == 0
    prepare = ["mimic-cxr", "--root", str(root / "mimic"), "--out", str(root / "shards"), "--image-size", "64",
               "--samples-per-shard", "8", "--workers", "1"]
    assert prepare_main(prepare) == 0
    return root / "shards"


def _fit(run: Path, shards: Path, losses: Path, kill_at_step: int, resume: bool, tmp: Path):
    env = dict(os.environ, PYTHONPATH=str(HERE), WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(tmp),
               WANDB_CACHE_DIR=str(tmp / "wc"), WANDB_CONFIG_DIR=str(tmp / "wcfg"), PYTHONWARNINGS="ignore")
    env.pop("WANDB_SERVICE", None)  # never attach to a W&B service an earlier test in this process started
    args = [sys.executable, "-m", "lit_medxchat.cli", "fit", "--config", "tiny/findings_classifier",
            "--data.data_dir", str(shards), "--trainer.default_root_dir", str(run), "--trainer.max_steps", "8",
            "--trainer.limit_val_batches", "0",
            "--trainer.logger", "lit_medxchat.training.wandb_run.ContinuingWandbLogger",
            "--trainer.logger.project", "cli-fault", "--trainer.logger.save_dir", str(run),
            "--trainer.logger.offline", "true",
            "--trainer.callbacks+=cli_callbacks.StepLossLog", "--trainer.callbacks.path", str(losses),
            "--trainer.callbacks.kill_at_step", str(kill_at_step)]
    if resume:
        args += ["--ckpt_path", "last"]
    return subprocess.run(args, env=env, cwd=tmp, capture_output=True, text=True, timeout=900, start_new_session=True)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_cli_run_killed_and_resumed_continues_losses_and_wandb_run(phantom_shards, tmp_path):
    """Proves, through the user's command: a SIGKILL at step 5 and `--ckpt_path last` give the losses of an
    uninterrupted run (bitwise), and the restarted process logs into the same W&B run id."""
    reference = _fit(tmp_path / "reference", phantom_shards, tmp_path / "reference.jsonl", -1, False, tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    killed = _fit(tmp_path / "run", phantom_shards, tmp_path / "run.jsonl", 5, False, tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    end_leftovers(tmp_path)
    resumed = _fit(tmp_path / "run", phantom_shards, tmp_path / "run.jsonl", -1, True, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "--ckpt_path last ->" in resumed.stderr

    expected = {row["step"]: row["loss"] for row in _rows(tmp_path / "reference.jsonl")}
    rows = _rows(tmp_path / "run.jsonl")
    assert [row["step"] for row in rows] == [0, 1, 2, 3, 4, 4, 5, 6, 7]  # killed before step 5; resumed at 4
    assert all(row["loss"] == expected[row["step"]] for row in rows), (rows, expected)
    run_ids = {p.name.split("-")[-1] for p in (tmp_path / "run" / "wandb").glob("offline-run-*")}
    assert len(run_ids) == 1 and len(list((tmp_path / "run" / "wandb").glob("offline-run-*"))) == 2, run_ids
