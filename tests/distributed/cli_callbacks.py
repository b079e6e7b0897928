"""Callbacks the CLI fault test adds with `--trainer.callbacks+=cli_callbacks.StepLossLog` (on PYTHONPATH)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from lightning.pytorch import Callback


class StepLossLog(Callback):
    """Appends `{"step", "loss"}` per optimizer step to `path`; SIGKILLs its process group at `kill_at_step`."""

    def __init__(self, path: str, kill_at_step: int = -1) -> None:
        self.path = Path(path)
        self.kill_at_step = kill_at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.kill_at_step:
            os.killpg(os.getpgrp(), signal.SIGKILL)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": trainer.global_step - 1, "loss": float(loss)}) + "\n")


class RankStepLog(Callback):
    """Per rank: appends `{"step", "loss"}` per optimizer step to `<prefix>.rank<R>.jsonl`.

    `kill_after_step`: after logging the step that brings `global_step` to this value, SIGKILL this process's
    group, before the periodic checkpoint of that step is written (checkpoint callbacks run last), as a
    preemption of every node at once. `hang_timeout_s`: a rank still running after this long prints every
    thread's stack and exits, so a hang fails with its stacks instead of a CI timeout.
    """

    def __init__(self, prefix: str, kill_after_step: int = -1, hang_timeout_s: float = 0.0) -> None:
        self.prefix = prefix
        self.kill_after_step = kill_after_step
        self.hang_timeout_s = hang_timeout_s

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.hang_timeout_s > 0:
            import faulthandler

            faulthandler.dump_traceback_later(self.hang_timeout_s, exit=True)

    def on_fit_start(self, trainer, pl_module) -> None:
        """What the model held right after `configure_model` under ZeRO-3 (`built_parameter_bytes`), if it says."""
        held = getattr(pl_module, "built_parameter_bytes", None)
        if held is not None:
            Path(f"{self.prefix}.rank{trainer.global_rank}.built.json").write_text(json.dumps(held))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        path = Path(f"{self.prefix}.rank{trainer.global_rank}.jsonl")
        with path.open("a") as handle:
            handle.write(json.dumps({"step": trainer.global_step - 1, "loss": float(loss)}) + "\n")
        if trainer.global_step == self.kill_after_step:
            os.killpg(os.getpgrp(), signal.SIGKILL)
