"""Opt-in W&B samples: tables of example texts and grids of generated CXRs.

These are patient data (reports, images), so callbacks call this only when ``log_samples=True``
(default False). Scalars go to every logger through ``pl_module.log``; samples go only to
``WandbLogger``s and only from rank 0. W&B works offline (``WANDB_MODE=offline``) without an account.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from lightning.pytorch import Trainer


def wandb_loggers(trainer: Trainer) -> list:
    """The trainer's ``WandbLogger``s (empty when wandb is not in use)."""
    from lightning.pytorch.loggers import WandbLogger

    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def log_text_table(trainer: Trainer, key: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> int:
    """Log a table to every W&B logger; returns how many loggers received it."""
    loggers = wandb_loggers(trainer)
    for logger in loggers:
        logger.log_table(key=key, columns=list(columns), data=[list(r) for r in rows], step=trainer.global_step)
    return len(loggers)


def image_grid(images01: torch.Tensor, columns: int = 4, pad: int = 2) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> one (3, rows*H', columns*W') image with ``pad`` white pixels between tiles."""
    if images01.ndim != 4 or images01.shape[0] == 0:
        raise ValueError(f"image_grid needs a non-empty (B, C, H, W) batch, got shape {tuple(images01.shape)}")
    images = images01.detach().float().cpu().clamp(0, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    b, c, h, w = images.shape
    columns = min(columns, b)
    rows = math.ceil(b / columns)
    grid = torch.ones(c, rows * (h + pad) + pad, columns * (w + pad) + pad)
    for i in range(b):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


def log_image_grid(trainer: Trainer, key: str, images01: torch.Tensor, caption: str, columns: int = 4) -> int:
    """Log one grid image with a caption to every W&B logger; returns how many loggers received it."""
    loggers = wandb_loggers(trainer)
    if not loggers:
        return 0
    grid = (image_grid(images01, columns).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    for logger in loggers:
        logger.log_image(key=key, images=[grid], caption=[caption], step=trainer.global_step)
    return len(loggers)
