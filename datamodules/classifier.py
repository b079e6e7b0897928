"""Batches for the view and findings classifiers: image -> view class and the 14 CheXpert labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from datamodules.film_variation import FilmVariation
from datamodules.shard_datamodule import ShardDataModule
from datamodules.shard_reader import RawSample, SkipSample
from datamodules.streaming import stack_batch
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, Augment, ImagePipeline
from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_CLASSES

UncertainPolicy = Literal["zeros", "ones", "ignore"]


def encode_labels(
    labels: dict[str, float | None], policy: UncertainPolicy, blank_policy: str = "ignore"
) -> tuple[list[float], list[float]]:
    """CheXpert values (1 / 0 / -1 / None) -> (targets, mask) in `CHEXPERT_LABELS` order.

    Blank (None, not mentioned) is masked out (`blank_policy="ignore"`) or read as absent (`"zeros"`, the
    usual reading of CheXpert-labelled reports: a finding a radiologist does not mention is not there).
    Uncertain (-1) becomes 0 (`zeros`, U-Zeros), 1 (`ones`, U-Ones) or is masked out (`ignore`, U-Ignore),
    the three policies of the CheXpert paper.
    """
    if blank_policy not in ("ignore", "zeros"):
        raise ValueError(f"blank_policy={blank_policy!r}; use 'ignore' or 'zeros'")
    targets, mask = [], []
    for name in CHEXPERT_LABELS:
        value = labels.get(name)
        if value is None:
            targets.append(0.0)
            mask.append(1.0 if blank_policy == "zeros" else 0.0)
        elif value == -1.0:
            targets.append(1.0 if policy == "ones" else 0.0)
            mask.append(0.0 if policy == "ignore" else 1.0)
        elif value in (0.0, 1.0):
            targets.append(float(value))
            mask.append(1.0)
        else:
            raise SkipSample("bad-label", f"label {name}={value!r}; expected 1.0, 0.0, -1.0 or null")
    return targets, mask


def view_index(meta: dict[str, Any]) -> int:
    view = meta.get("view")
    if view not in VIEW_CLASSES:
        raise SkipSample("bad-view", f"view {view!r} is not one of {VIEW_CLASSES}")
    return VIEW_CLASSES.index(view)


@dataclass(frozen=True)
class ClassifierExample:
    """One sample -> pixel_values (3, S, S), view index, labels and mask (picklable for workers)."""

    images: ImagePipeline
    uncertain_policy: UncertainPolicy
    blank_policy: str = "ignore"

    def __call__(self, sample: RawSample, rng: np.random.Generator) -> dict[str, Any]:
        meta = sample.json("json")
        targets, mask = encode_labels(meta.get("labels") or {}, self.uncertain_policy, self.blank_policy)
        return {
            "pixel_values": self.images(sample.member("jpg"), rng),
            "view": view_index(meta),
            "labels": targets,
            "label_mask": mask,
            "key": sample.key,
        }


def collate_classifier(examples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pixel_values": stack_batch([e["pixel_values"] for e in examples]),
        "view": torch.tensor([e["view"] for e in examples], dtype=torch.long),
        "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.float32),
        "label_mask": torch.tensor([e["label_mask"] for e in examples], dtype=torch.float32),
        "keys": [e["key"] for e in examples],
    }


class ClassifierDataModule(ShardDataModule):
    """View classifier / findings classifier batches (data contract §3, classifier batch).

    Args:
        image_size: square side in pixels (images are letterboxed, never cropped).
        image_mean, image_std: per-channel normalisation of the backbone (ImageNet by default).
        uncertain_policy: what an uncertain (-1) CheXpert label becomes: `zeros`, `ones` or `ignore`
            (masked out of the loss).
        blank_policy: what a blank (not mentioned) label becomes: masked out (`ignore`) or absent (`zeros`).
        augment: random rotation/zoom/shift and brightness/contrast on training images (never flips).
        rotation_degrees, zoom, shift, brightness, contrast: augmentation ranges (see `Augment`).
        film_variation: also give training images random real-film looks (display curves, histogram
            equalisation, crops and collimation, burned-in markers; see `datamodules.film_variation`), so a
            classifier trained on rendered CXRs holds up on real radiographs.
        (the remaining arguments are `ShardDataModule`'s)
    """

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        seed: int = 1234,
        shuffle_window: int = 1024,
        pin_memory: bool = False,
        image_size: int = 224,
        image_mean: tuple[float, float, float] = IMAGENET_MEAN,
        image_std: tuple[float, float, float] = IMAGENET_STD,
        uncertain_policy: UncertainPolicy = "ignore",
        augment: bool = True,
        rotation_degrees: float = 5.0,
        zoom: float = 0.05,
        shift: float = 0.03,
        brightness: float = 0.1,
        contrast: float = 0.1,
        film_variation: bool = False,
        blank_policy: str = "ignore",
        retries: int = 3,
        retry_backoff: float = 1.0,
        cache_dir: str | None = None,
        cache_size_gb: float = 100.0,
        lanes: int | None = None,
    ) -> None:
        super().__init__(data_dir, batch_size, eval_batch_size, num_workers, seed, shuffle_window, pin_memory,
                         retries, retry_backoff, cache_dir, cache_size_gb, lanes)
        if uncertain_policy not in ("zeros", "ones", "ignore"):
            raise ValueError(f"uncertain_policy={uncertain_policy!r}; use 'zeros', 'ones' or 'ignore'")
        self.save_hyperparameters()
        self.image_size = image_size
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)
        self.uncertain_policy = uncertain_policy
        if blank_policy not in ("ignore", "zeros"):
            raise ValueError(f"blank_policy={blank_policy!r}; use 'ignore' or 'zeros'")
        self.blank_policy = blank_policy
        self.augmentation = Augment(rotation_degrees, zoom, shift, brightness, contrast) if augment else None
        self.film = FilmVariation() if film_variation else None

    def example_fn(self, split: str, train: bool) -> ClassifierExample:
        images = ImagePipeline(self.image_size, self.image_mean, self.image_std,
                               self.augmentation if train else None, film=self.film if train else None)
        return ClassifierExample(images, self.uncertain_policy, self.blank_policy)

    def collate_fn(self, split: str, train: bool):
        return collate_classifier
