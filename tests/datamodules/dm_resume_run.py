"""Three fits over the same shards: uninterrupted, stopped mid-epoch with a checkpoint, resumed from it.

Imported by the in-process resume test; run under torchrun (one process per rank) for the 2-rank DDP test,
which skips the uninterrupted fit and compares with `expected_keys` (the loader's own sequence for the rank;
the in-process test shows a Trainer sees exactly that). Each run records the
keys of every training and validation batch it sees.
Usage: python dm_resume_run.py DATA_DIR OUT_DIR STOP_STEP NUM_WORKERS
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from datamodules.classifier import ClassifierDataModule
from datamodules.shard_datamodule import SkippedSamplesLogger


class KeyRecorder(pl.LightningModule):
    """A one-layer model that remembers which samples it was fed, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.train_keys: list[list[str]] = []
        self.val_keys: list[list[str]] = []

    def training_step(self, batch, batch_idx):
        self.train_keys.append(list(batch["keys"]))
        return self.layer(batch["pixel_values"].mean(dim=(2, 3))).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.val_keys.append(list(batch["keys"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _trainer(devices: int, root: Path, **options) -> pl.Trainer:
    strategy = "ddp" if devices > 1 else "auto"
    options.setdefault("enable_checkpointing", False)
    return pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(root), **options)


def _datamodule(data_dir: str, num_workers: int) -> ClassifierDataModule:
    return ClassifierDataModule(data_dir, batch_size=2, eval_batch_size=2, num_workers=num_workers, image_size=16,
                                shuffle_window=8, seed=3)


def expected_keys(data_dir: str, rank: int, world_size: int, epochs: int = 2) -> list[list[str]]:
    """The training batches `rank` must see, straight from the loader (no Trainer): the DDP reference."""
    loader = _datamodule(data_dir, 0).train_dataloader()
    loader.dataset.set_rank(rank, world_size)
    keys = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        keys += [batch["keys"] for batch in loader]
    return keys


def run_all(data_dir: str, out_dir: Path, stop_step: int, num_workers: int, devices: int = 1,
            uninterrupted: bool = True) -> dict:
    """Returns the key sequences of the fits for this rank (the uninterrupted one only if asked)."""
    whole = KeyRecorder()
    logged = {}
    if uninterrupted:
        whole_trainer = _trainer(devices, out_dir, max_epochs=2, callbacks=[SkippedSamplesLogger()])
        whole_trainer.fit(whole, _datamodule(data_dir, num_workers))
        logged = {name: float(value) for name, value in whole_trainer.callback_metrics.items()}

    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=out_dir / "ckpt", every_n_train_steps=stop_step,
                                              save_top_k=-1, filename="stop")
    first = KeyRecorder()
    first_trainer = _trainer(devices, out_dir, max_steps=stop_step, callbacks=[checkpoint], enable_checkpointing=True)
    first_trainer.fit(first, _datamodule(data_dir, num_workers))

    second = KeyRecorder()
    trainer = _trainer(devices, out_dir, max_epochs=2)
    trainer.fit(second, _datamodule(data_dir, num_workers), ckpt_path=str(out_dir / "ckpt" / "stop.ckpt"))
    return {
        "rank": trainer.global_rank,
        "whole_train": whole.train_keys,
        "whole_val": whole.val_keys,
        "first_train": first.train_keys,
        "second_train": second.train_keys,
        "second_val": second.val_keys,
        "logged": logged,
    }


def main(argv: list[str]) -> None:
    if "HANG_DUMP_S" in os.environ:  # a stuck rank prints where every thread waits, then exits
        faulthandler.dump_traceback_later(float(os.environ["HANG_DUMP_S"]), exit=True)
    data_dir, out_dir, stop_step, num_workers = argv[0], Path(argv[1]), int(argv[2]), int(argv[3])
    result = run_all(data_dir, out_dir, stop_step, num_workers, devices=int(os.environ.get("WORLD_SIZE", "1")),
                     uninterrupted=False)
    (out_dir / f"rank{result['rank']}.json").write_text(json.dumps(result))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    faulthandler.cancel_dump_traceback_later()


if __name__ == "__main__":
    main(sys.argv[1:])
