"""Batches for CXR-SD: the image at the Stable Diffusion resolution in [-1, 1] and its view-augmented report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from datamodules.classifier import encode_labels, view_index
from datamodules.shard_datamodule import ShardDataModule
from datamodules.shard_reader import RawSample, SkipSample
from datamodules.streaming import stack_batch
from datamodules.transforms import Augment, ImagePipeline


@dataclass(frozen=True)
class DiffusionExample:
    """One sample -> pixel_values (3, R, R) in [-1, 1], the `.txt` report, labels and view (picklable)."""

    images: ImagePipeline

    def __call__(self, sample: RawSample, rng: np.random.Generator) -> dict[str, Any]:
        meta = sample.json("json")
        text = sample.text("txt").strip()
        if not text:
            raise SkipSample("empty-report", f"{sample.shard}: sample {sample.key} has an empty .txt")
        # Blank labels are 0 here: the judge compares against positives only.
        labels, _ = encode_labels(meta.get("labels") or {}, "zeros")
        pixel_values = self.images(sample.member("jpg"), rng)
        return {
            "pixel_values": pixel_values,
            "text": text,
            "labels": labels,
            "view": view_index(meta),
            "key": sample.key,
            # Seeds this sample's diffusion noise, timestep and caption drop-out: keyed to (seed, epoch, sample)
            # like the augmentation, so it differs across ranks and does not depend on the world size.
            "noise_seed": int(rng.integers(2**62)),
        }


def collate_diffusion(examples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pixel_values": stack_batch([e["pixel_values"] for e in examples]),
        "text": [e["text"] for e in examples],
        "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.float32),
        "view": torch.tensor([e["view"] for e in examples], dtype=torch.long),
        "keys": [e["key"] for e in examples],
        "noise_seeds": torch.tensor([e["noise_seed"] for e in examples], dtype=torch.long),
    }


class DiffusionDataModule(ShardDataModule):
    """CXR-SD batches (data contract §3, diffusion batch).

    The text is the shard's `.txt`, which already starts with the view sentence ("PA view of the chest
    was obtained."): the paper's view-augmented report that lets users ask for a view.

    Args:
        resolution: SD training resolution in pixels (512 at paper scale; must be divisible by the VAE's
            downsampling factor, 8 for SD).
        augment: small rotation/zoom/shift and brightness/contrast on training images (never flips). Off by
            default: the generator should learn the real distribution of positioning and exposure.
        rotation_degrees, zoom, shift, brightness, contrast: augmentation ranges (see `Augment`).
        (the remaining arguments are `ShardDataModule`'s)
    """

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        seed: int = 1234,
        shuffle_window: int = 1024,
        pin_memory: bool = False,
        resolution: int = 512,
        augment: bool = False,
        rotation_degrees: float = 3.0,
        zoom: float = 0.03,
        shift: float = 0.02,
        brightness: float = 0.05,
        contrast: float = 0.05,
        retries: int = 3,
        retry_backoff: float = 1.0,
        cache_dir: str | None = None,
        cache_size_gb: float = 100.0,
        lanes: int | None = None,
    ) -> None:
        super().__init__(data_dir, batch_size, eval_batch_size, num_workers, seed, shuffle_window, pin_memory,
                         retries, retry_backoff, cache_dir, cache_size_gb, lanes)
        if resolution % 8:
            raise ValueError(f"resolution={resolution} must be divisible by 8 (the SD VAE downsamples by 8)")
        self.save_hyperparameters()
        self.resolution = resolution
        self.augmentation = Augment(rotation_degrees, zoom, shift, brightness, contrast) if augment else None

    def example_fn(self, split: str, train: bool) -> DiffusionExample:
        return DiffusionExample(ImagePipeline(self.resolution, augment=self.augmentation if train else None,
                                              mode="signed"))

    def collate_fn(self, split: str, train: bool):
        return collate_diffusion
