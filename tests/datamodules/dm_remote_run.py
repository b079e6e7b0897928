"""One rank of a short classifier-style fit over shards at DATA (a folder or a URL), recording every step.

Each step appends {"step", "keys", "loss"} to OUT/steps-rank<R>.jsonl (flushed and fsynced, so a SIGKILL keeps
what was trained). A checkpoint is written every 5 steps. `--kill-at-step K` SIGKILLs the whole process group
(both ranks and their loader workers) at the start of step K, as a preempting scheduler does; `--resume`
continues from the newest checkpoint. Run one process per rank (LOCAL_RANK, WORLD_SIZE, MASTER_* set by the test).
Usage: python dm_remote_run.py DATA OUT [--kill-at-step K] [--resume]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import lightning.pytorch as pl
import torch

from datamodules.classifier import ClassifierDataModule

MAX_STEPS = 12
CKPT_EVERY = 5


class StepRecorder(pl.LightningModule):
    """A small linear model on mean pixels whose losses depend on the exact samples and their order."""

    def __init__(self, out: Path, kill_at_step: int | None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 14)
        self.out = out
        self.kill_at_step = kill_at_step

    def training_step(self, batch, batch_idx):
        if self.kill_at_step is not None and self.global_step == self.kill_at_step and self.global_rank == 0:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        logits = self.layer(batch["pixel_values"].mean(dim=(2, 3)))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"].clamp(min=0.0))
        row = {"step": self.global_step, "keys": list(batch["keys"]), "loss": loss.item()}
        with open(self.out / f"steps-rank{self.global_rank}.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out", type=Path)
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    datamodule = ClassifierDataModule(args.data, batch_size=2, eval_batch_size=2, num_workers=2, image_size=16,
                                      shuffle_window=8, seed=3, lanes=2, retry_backoff=0.05)
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=args.out / "ckpt", every_n_train_steps=CKPT_EVERY,
                                               save_top_k=-1, filename="{step}")
    trainer = pl.Trainer(accelerator="cpu", devices=world_size, strategy="ddp" if world_size > 1 else "auto",
                         max_steps=MAX_STEPS, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, callbacks=[checkpoints],
                         default_root_dir=str(args.out))
    ckpt_path = None
    if args.resume:
        saved = sorted((args.out / "ckpt").glob("step=*.ckpt"), key=lambda path: int(path.stem.split("=")[1]))
        ckpt_path = str(saved[-1])
    trainer.fit(StepRecorder(args.out, args.kill_at_step), datamodule, ckpt_path=ckpt_path)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
