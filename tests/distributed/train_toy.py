"""Fault-test training script: the toy model on 1-2 CPU ranks with DDP or DeepSpeed ZeRO, and ways to die.

Run as a subprocess (or under `torchrun` / `fabric run`); never inside the pytest process. Each rank
appends `{"step", "loss", "indices"}` per optimizer step to `RUN/losses-rank<R>.jsonl` as it goes, so a
run killed with SIGKILL still leaves what it computed.

Ways to die (the whole process group gets SIGKILL, as from a preempting scheduler):
  --kill-at-step K       at the start of step K, mid-epoch
  --kill-in-save-step S  inside the checkpoint save of step S, after every rank wrote its files and
                         before the completion marker (a torn checkpoint)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from toy import ToyDataModule, ToyModel

from lit_medxchat.training.checkpoint_callback import CompleteCheckpoint
from lit_medxchat.training.strategies import deepspeed_strategy


def _kill_process_group() -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


class LossRecorder(Callback):
    """Appends each step's loss and sample indices to a per-rank JSONL file; can SIGKILL the group."""

    def __init__(self, run_dir: Path, kill_at_step: int | None) -> None:
        self.run_dir = run_dir
        self.kill_at_step = kill_at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.kill_at_step is not None and trainer.global_step == self.kill_at_step and trainer.is_global_zero:
            _kill_process_group()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, loss, indices = pl_module.step_losses[-1]
        with (self.run_dir / f"losses-rank{trainer.global_rank}.jsonl").open("a") as handle:
            handle.write(json.dumps({"step": step, "loss": loss, "indices": indices}) + "\n")
            handle.flush()


class TornCheckpoint(CompleteCheckpoint):
    """Dies after the files of step `kill_in_save_step` are written, before its completion marker."""

    def __init__(self, *args, kill_in_save_step: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kill_in_save_step = kill_in_save_step

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        if trainer.global_step != self.kill_in_save_step:
            return super()._save_checkpoint(trainer, filepath)
        ModelCheckpoint._save_checkpoint(self, trainer, filepath)  # files written by every rank, no marker
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            _kill_process_group()
        trainer.strategy.barrier()


def build_strategy(name: str):
    if name == "ddp":
        return "ddp"
    if name in ("zero2", "zero3"):
        return deepspeed_strategy(name)
    raise SystemExit(f"--strategy {name!r}: choose ddp, zero2 or zero3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--ckpt-every", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="fit(ckpt_path='last')")
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("--kill-in-save-step", type=int, default=None)
    parser.add_argument("--wandb", action="store_true", help="log to an offline ContinuingWandbLogger")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reference-dir", type=Path, default=None,
                        help="after the run, train again from scratch (same seed, no interruption) into this folder")
    args = parser.parse_args()
    fit(args, args.run_dir, resume=args.resume)
    if args.reference_dir is not None:
        fit(args, args.reference_dir, resume=False)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def fit(args: argparse.Namespace, run_dir: Path, resume: bool) -> None:
    """One training run into `run_dir`; `resume` continues from its newest complete checkpoint."""
    from lit_medxchat.training.completion import find_last_complete_checkpoint

    torch.set_num_threads(1)
    seed_everything(args.seed, workers=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = False
    if args.wandb:
        from lit_medxchat.training.wandb_run import wandb_logger

        resume_from = find_last_complete_checkpoint(run_dir / "checkpoints") if resume else None
        logger = wandb_logger(project="fault-tests", save_dir=str(run_dir / "wandb"), offline=True, tags=["test"],
                              resume_checkpoint=str(resume_from) if resume_from else None)
    checkpoint = TornCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="{epoch}-{step}",
        every_n_train_steps=args.ckpt_every,
        save_top_k=-1,
        kill_in_save_step=args.kill_in_save_step,
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=build_strategy(args.strategy),
        max_steps=args.max_steps,
        logger=logger,
        log_every_n_steps=1,
        callbacks=[checkpoint, LossRecorder(run_dir, args.kill_at_step)],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    trainer.fit(ToyModel(), ToyDataModule(), ckpt_path="last" if resume else None, weights_only=True)
    if trainer.is_global_zero:
        result = {"global_step": trainer.global_step, "world_size": trainer.world_size, "ckpt_path": trainer.ckpt_path}
        if args.wandb:
            result |= {"wandb_id": logger.version, "wandb_skipped_rows": logger.skipped_rows,
                       "wandb_last_step": logger.last_logged_step}
        (run_dir / "result.json").write_text(json.dumps(result))
    if args.wandb:
        import wandb

        wandb.finish()  # the reference run in the same process must open its own W&B run


if __name__ == "__main__":
    main()
