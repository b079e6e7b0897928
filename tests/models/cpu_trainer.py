"""The quiet one-process CPU Trainer the model tests fit, validate and checkpoint with."""

from __future__ import annotations

from typing import Any

import lightning as L


def cpu_trainer(**changes: Any) -> L.Trainer:
    """No logger, checkpoints, progress bar, summary or sanity pass unless `changes` ask for them: the tests
    read what the model logged and saved themselves, and nothing else may write beside their tmp folders."""
    options: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**options, **changes})
