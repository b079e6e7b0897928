"""Exact mid-epoch resume through a real `Trainer.fit`: 2 workers in-process, and 2 DDP ranks (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from dm_resume_run import expected_keys, run_all

HERE = Path(__file__).parent


def test_resume_mid_epoch_with_two_workers_sees_the_uninterrupted_sequence(shard_dir, tmp_path):
    result = run_all(str(shard_dir), tmp_path, stop_step=5, num_workers=2)
    whole, first, second = result["whole_train"], result["first_train"], result["second_train"]
    assert len(whole) == 2 * (37 // 2)
    assert len(first) == 5
    assert first + second == whole, "resumed run repeated or skipped samples"
    assert whole[: len(whole) // 2] != whole[len(whole) // 2 :], "epochs must be shuffled differently"
    checkpoint = torch.load(tmp_path / "ckpt" / "stop.ckpt", weights_only=False)
    state = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert state["ranks"][0]["batches"] == 5 and state["ranks"][0]["epoch"] == 0
    assert result["logged"]["data/train_skipped"] == 0.0 and result["logged"]["data/validate_skipped"] == 0.0


def test_two_ddp_ranks_resume_exactly_and_cover_validation_once(shard_dir, tmp_path):
    # torchrun binds the rendezvous port itself (a port picked here and released can be taken before rank 0
    # binds it) and both ranks write into one pipe read to the end (with a pipe per rank read one after the
    # other, a full unread pipe blocks that rank and the other waits on it). A rank stuck longer than
    # HANG_DUMP_S prints every thread's stack and exits, so a hang fails with a trace, not a bare timeout.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HANG_DUMP_S": "240",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(HERE / "dm_resume_run.py"), str(shard_dir), str(tmp_path), "7", "2"]
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=420)
    assert result.returncode == 0, result.stdout[-6000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]

    per_epoch = (37 // 2) // 2  # 18 samples per rank, batches of 2
    for rank in ranks:
        whole = expected_keys(str(shard_dir), rank["rank"], 2)
        assert len(whole) == 2 * per_epoch, "every rank runs the same number of steps"
        assert rank["first_train"] + rank["second_train"] == whole, f"rank {rank['rank']} resume"
        rank["whole_train"] = whole
    for epoch in range(2):
        seen = [key for rank in ranks for batch in rank["whole_train"][epoch * per_epoch : (epoch + 1) * per_epoch]
                for key in batch]
        assert len(seen) == len(set(seen)) == 36, "ranks must read disjoint samples within an epoch"

    # validation (end of epochs 0 and 1 of the resumed fit): 7 samples, each exactly once across the 2 ranks
    passes = [[key for batch in rank["second_val"] for key in batch] for rank in ranks]
    assert len(ranks[0]["second_val"]) == len(ranks[1]["second_val"]) == 2 * 2  # 2 passes x 2 batches per rank
    for rank_keys in passes:
        assert rank_keys[: len(rank_keys) // 2] == rank_keys[len(rank_keys) // 2 :]
    one_pass = passes[0][: len(passes[0]) // 2] + passes[1][: len(passes[1]) // 2]
    assert sorted(one_pass) == [f"dicom-{i:05d}" for i in range(100, 107)]

    checkpoint = torch.load(tmp_path / "ckpt" / "stop.ckpt", weights_only=False)
    state = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert [entry["rank"] for entry in state["ranks"]] == [0, 1], "every rank's data position is in the checkpoint"


def test_validate_test_and_predict_through_a_trainer(shard_dir, tmp_path):
    import lightning.pytorch as pl
    from dm_resume_run import KeyRecorder, _datamodule

    class Predictor(KeyRecorder):
        def test_step(self, batch, batch_idx):
            self.val_keys.append(list(batch["keys"]))

        def predict_step(self, batch, batch_idx):
            return list(batch["keys"])

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         default_root_dir=str(tmp_path))
    test_keys = [f"dicom-{i:05d}" for i in range(200, 205)]
    model = Predictor()
    trainer.test(model, datamodule=_datamodule(str(shard_dir), 0))
    assert [key for batch in model.val_keys for key in batch] == test_keys
    predicted = trainer.predict(Predictor(), datamodule=_datamodule(str(shard_dir), 0))
    assert [key for batch in predicted for key in batch] == test_keys
    model = Predictor()
    trainer.validate(model, datamodule=_datamodule(str(shard_dir), 0))
    assert [key for batch in model.val_keys for key in batch] == [f"dicom-{i:05d}" for i in range(100, 107)]
