"""Look-ahead over one optimiser step: tell every micro-batch a total over all micro-batches of its step.

Why: a loss that is a mean over the tokens of *one* micro-batch weighs a token by what else shares that
micro-batch (a 5-token VQA answer next to 100-token reports counts 20 times more than a report token). The
causal-LM loss must be a mean over the answer tokens of the whole optimiser step, across gradient
accumulation and ranks. The model cannot know the later micro-batches of a step when it runs the first
backward, so the loader reads the step's micro-batches ahead, counts, and hands each batch the step's
local total; the model sums that over ranks (one scalar all-reduce) and divides by it.

Groups follow Lightning's accumulation boundaries: batch `i` of an epoch closes a step when
`(i + 1) % accumulate == 0` or when it is the epoch's last batch, counted from the start of the epoch, so a
run resumed at a step boundary groups exactly as the uninterrupted one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepTotals:
    """Adds `batch[key] = sum(count(b) for b in the batch's optimiser step)` (this rank's share) to each batch.

    Args:
        key: the batch key to set (e.g. `step_answer_tokens`).
        count: what one batch contributes (e.g. its supervised tokens).
        accumulate: micro-batches per optimiser step (`Trainer.accumulate_grad_batches`).
    """

    key: str
    count: Callable[[Any], int]
    accumulate: int = 1

    def __post_init__(self) -> None:
        if self.accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {self.accumulate}")

    def annotate(self, items: Iterator[tuple[Any, Any]], start: int) -> Iterator[tuple[Any, Any]]:
        """`items` yields (batch, extra) pairs from epoch batch `start` on; yields them annotated, in order."""
        index = start
        while True:
            group = list(itertools.islice(items, self.accumulate - index % self.accumulate))
            if not group:
                return
            total = sum(int(self.count(batch)) for batch, _ in group)
            for batch, extra in group:
                batch[self.key] = total
                yield batch, extra
            index += len(group)
