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
