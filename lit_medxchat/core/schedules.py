"""Learning-rate factors for `torch.optim.lr_scheduler.LambdaLR`, one copy for every model.

Each model steps one scheduler per optimiser step (DeepSpeed accepts no more than one), so every
schedule is a plain function of the step: linear warm-up, optionally followed by cosine decay.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def linear_warmup(warmup_steps: int) -> Callable[[int], float]:
    """Factor rising linearly to 1 over `warmup_steps` (step 0 already trains at 1 / warmup_steps), then 1."""
    warmup = max(int(warmup_steps), 0)

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) if warmup else 1.0

    return factor


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 0 at `total_steps`.

    Short CPU runs then end at a low learning rate, which is worth several epochs of constant-rate
    training on small data.
    """
    warmup = linear_warmup(warmup_steps)

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return warmup(step)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor

