"""A tiny LightningModule whose validation/test steps return fixed outputs, and a tiny image judge.

Item ``i`` of the fixed corpus is the same whichever rank or batch it lands in, so a distributed run
over halves of the items must score exactly like one process over all of them.
"""

from __future__ import annotations

import random

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_CLASSES
from tests.callbacks.report_corpus import report_pairs

NUM_ITEMS = 41
_VQA = [
    ("Yes, there is a small left pleural effusion.", "yes", "presence", "Pleural Effusion"),
    ("There is no pneumothorax.", "yes", "presence", "Pneumothorax"),
    ("The opacity is in the right lower lobe.", "right lower lobe", "location", "Consolidation-or-Pneumonia"),
    ("It is moderate.", "small", "sst", "Edema"),
]


def chat_outputs(indices: list[int]) -> dict:
    """The chat model's step outputs for items ``indices``: even items are reports, odd items VQA."""
    preds, refs = report_pairs(NUM_ITEMS, seed=11)
    out: dict = {"predictions": [], "references": [], "tasks": [], "meta": []}
    for i in indices:
        if i % 2 == 0:
            out["predictions"].append(preds[i])
            out["references"].append(refs[i])
            out["tasks"].append("report")
            out["meta"].append({"labels": {}, "view": "PA", "key": f"k{i}"})
        else:
            pred, answer, topic, diagnosis = _VQA[(i // 2) % len(_VQA)]
            out["predictions"].append(pred)
            out["references"].append(pred)
            out["tasks"].append("vqa")
            meta = {"topic": topic, "diagnosis": diagnosis, "answer": answer, "key": f"k{i}", "labels": {}}
            out["meta"].append(meta)
    return out


def image_outputs(indices: list[int], size: int = 16) -> dict:
    """The diffusion model's step outputs for items ``indices`` (seeded per item)."""
    gens, reals, labels, views = [], [], [], []
    for i in indices:
        g = torch.Generator().manual_seed(i)
        reals.append(torch.rand(3, size, size, generator=g))
        gens.append((reals[-1] * 0.7 + 0.3 * torch.rand(3, size, size, generator=g)).clamp(0, 1))
        row = torch.randint(-1, 2, (len(CHEXPERT_LABELS),), generator=g).float()
        row[random.Random(i).randrange(len(CHEXPERT_LABELS))] = float("nan")
        labels.append(row)
        views.append(i % len(VIEW_CLASSES))
    return {
        "generated": torch.stack(gens),
        "real": torch.stack(reals),
        "labels": torch.stack(labels),
        "view": torch.tensor(views),
        "prompts": [f"prompt {i}" for i in indices],
    }


class TinyJudge(nn.Module):
    """Stands in for the findings/view classifiers: ``features``, ``predict_proba``, ``num_features``."""

    name = "tiny-judge"

    def __init__(self, num_classes: int = len(CHEXPERT_LABELS), num_features: int = 6, image_size: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.num_features, self.image_size = num_features, image_size
        self.proj = nn.Linear(3 * 4, num_features)
        self.head = nn.Linear(num_features, num_classes)
        self.num_classes = num_classes

    @torch.no_grad()
    def features(self, images01: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(images01, 2).flatten(1)
        return self.proj(pooled)

    @torch.no_grad()
    def predict_proba(self, images01: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.features(images01))
        return logits.sigmoid() if self.num_classes == len(CHEXPERT_LABELS) else logits.softmax(-1)


class FixedOutputModule(L.LightningModule):
    """Returns chat and image outputs for the item indices of each batch; each rank gets its own share."""

    def __init__(self, batch_size: int = 4) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.dummy = nn.Linear(1, 1)

    def val_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        return DataLoader(list(range(NUM_ITEMS))[rank::world], batch_size=self.batch_size, shuffle=False)

    test_dataloader = val_dataloader

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> dict:
        indices = [int(i) for i in batch]
        return {**chat_outputs(indices), **image_outputs(indices)}  # disjoint keys: one module feeds all callbacks

    test_step = validation_step
