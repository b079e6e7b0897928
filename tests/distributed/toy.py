"""A tiny LightningModule and DataModule for the fault tests: a frozen "backbone", a trainable head.

The frozen part lets the tests assert that sharded checkpoints leave frozen weights out; the
randomness in `training_step` (dropout) and the shuffled, stateful data loader make an exact
resume depend on RNG states and the data position being restored, not only the weights.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch.utils.data import Dataset

FEATURES = 16
FROZEN_PREFIX = "backbone."


class RandomRegression(Dataset):
    """`length` fixed (x, y) pairs: the sample at an index never changes, so batches identify positions."""

    def __init__(self, length: int = 256, seed: int = 1234) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(length, FEATURES, generator=generator)
        self.y = torch.randn(length, 1, generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "y": self.y[index], "index": torch.tensor(index)}


class ToyDataModule(LightningDataModule):
    """`StatefulDataLoader` over a per-epoch seeded `DistributedSampler`.

    The shuffle depends only on (seed, epoch), like our WebDataset DataModules, never on the global
    RNG at the time the iterator is created (which a resume legitimately changes); the stateful loader
    then fast-forwards to the saved mid-epoch position.
    """

    def __init__(self, batch_size: int = 4, length: int = 256, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.length = length
        self.seed = seed

    def train_dataloader(self):
        from torch.utils.data import DistributedSampler
        from torchdata.stateful_dataloader import StatefulDataLoader

        dataset = RandomRegression(self.length)
        sampler = DistributedSampler(
            dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=True, seed=self.seed
        )
        return StatefulDataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=0)


class ToyModel(LightningModule):
    """Frozen 64-wide backbone + trainable head with dropout; AdamW and a step-wise LR schedule."""

    def __init__(self, hidden: int = 64, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(FEATURES, hidden), torch.nn.Tanh())
        self.backbone.requires_grad_(False)
        # Checkpoints hold only trainable weights (as in our real modules), so the frozen ones are "missing".
        self.strict_loading = False
        self.head = torch.nn.Sequential(
            torch.nn.Linear(hidden, hidden), torch.nn.Dropout(0.2), torch.nn.Linear(hidden, 1)
        )
        self.step_losses: list[tuple[int, float, list[int]]] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.backbone.eval()
        prediction = self.head(self.backbone(batch["x"]))
        loss = torch.nn.functional.mse_loss(prediction, batch["y"])
        self.step_losses.append((self.global_step, loss.item(), batch["index"].tolist()))
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
