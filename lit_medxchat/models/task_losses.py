"""The chat model's loss per task (report, VQA, text-to-CXR), so a user sees a task that does not learn.

The optimised loss is one mean over every answer token of the step, and reports are long: a VQA or text-to-CXR
task that stalls moves it by a few thousandths while its own loss stays flat. The per-task figures are
read off the logits the training pass computed anyway (no second forward, no gradient): the same shifted
cross-entropy as transformers' causal-LM loss, summed per row and grouped by the row's task. Validation and
test keep a token-weighted `MeanMetric` per task, which adds sums and weights over ranks before dividing,
as `eval_loss` does for the overall loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from lit_medxchat.core.conversation import IGNORE_INDEX
from lit_medxchat.models.eval_loss import STAGES

TASKS: tuple[str, ...] = ("report", "vqa", "t2i")


@torch.no_grad()
def token_loss_by_task(
    logits: torch.Tensor, labels: torch.Tensor, tasks: Sequence[str]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """`{task: (summed token cross-entropy, answer-token count)}` over the rows of each task.

    logits (B, L, V) predict the next token, labels (B, L) use `IGNORE_INDEX` for unsupervised positions (as
    the causal-LM loss: position t's logits are scored against label t+1). Tasks without a row are absent."""
    targets = labels[:, 1:].to(logits.device)
    counted = targets != IGNORE_INDEX
    # Row by row: a float copy of one row's logits at a time, not of the whole (B, L, vocab) batch.
    row_sums = torch.stack([
        F.cross_entropy(logits[row, :-1].float(), targets[row], ignore_index=IGNORE_INDEX, reduction="sum")
        for row in range(len(targets))
    ])
    row_counts = counted.sum(dim=1)
    grouped: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for task in dict.fromkeys(tasks):
        rows = torch.tensor([t == task for t in tasks], device=row_sums.device)
        grouped[task] = (row_sums[rows].sum(), row_counts[rows].sum())
    return grouped


def log_train_task_losses(module: pl.LightningModule, logits: torch.Tensor, labels: torch.Tensor,
                          tasks: Sequence[str]) -> None:
    """Log `train/loss_<task>` (this rank's batch mean per answer token) for each task the batch holds."""
    for task, (total, count) in token_loss_by_task(logits, labels, tasks).items():
        if count > 0:
            module.log(f"train/loss_{task}", total / count, prog_bar=True, batch_size=int(count))


def task_loss_metrics() -> nn.ModuleDict:
    """A token-weighted mean per (evaluation stage, task); register it on the module as `task_losses`."""
    from torchmetrics import MeanMetric

    return nn.ModuleDict({stage: nn.ModuleDict({task: MeanMetric() for task in TASKS}) for stage in STAGES})


def log_eval_task_losses(module: pl.LightningModule, stage: str, logits: torch.Tensor, labels: torch.Tensor,
                         tasks: Sequence[str]) -> None:
    """Add this batch to `module.task_losses[stage]` and log `<stage>/loss_<task>` for every task.

    Every task is updated and logged on every batch, with weight 0 where the batch has none of it: under DDP each
    rank must log the same metrics, or the epoch-end reduction of a task one rank never saw waits forever for that
    rank. A task no rank saw reads NaN (0 / 0)."""
    metrics = module.task_losses[stage]
    found = token_loss_by_task(logits, labels, tasks)
    for task, metric in metrics.items():
        total, count = found.get(task, (logits.new_zeros(()), logits.new_zeros((), dtype=torch.long)))
        weight = count.float()
        metric.update(total / weight.clamp(min=1.0), weight=weight)
        module.log(f"{stage}/loss_{task}", metric)
