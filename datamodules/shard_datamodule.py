"""What the three DataModules share: manifests per split, one resumable loader per split, rank wiring.

Subclasses say how one raw sample becomes an example (`example_fn`) and how examples become a batch
(`collate_fn`); this class does the streaming, the splitting by rank and worker, the exact resume and the
skipped-sample accounting (`SkippedSamplesLogger` logs the counts).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from datamodules.manifest import Manifest, load_manifest
from datamodules.remote import is_remote
from datamodules.resume import ResumableLoader
from datamodules.shard_cache import ShardCache
from datamodules.shard_reader import ShardReader
from datamodules.streaming import SKIPPED_PREFIX, CollateFn, ExampleFn, ShardBatchStream
from lit_medxchat.core.distributed import gather_objects

log = logging.getLogger(__name__)
SPLITS: dict[str, str] = {"train": "train", "validate": "validate", "test": "test", "predict": "test"}


class ShardDataModule(pl.LightningDataModule):
    """Base of the classifier, diffusion and chat DataModules (not used on its own).

    Args:
        data_dir: where `train/`, `validate/`, `test/` are, each with `manifest.json` and shards: a folder, or a
            URL prefix (`http(s)://`, `s3://`, `gs://`), a `pipe:` template holding `{shard}`, or a brace list
            of mirrors (see `datamodules.remote`); URLs are streamed front to back through webdataset.
        batch_size: samples per training batch on each rank (full batches only: every rank runs the same
            number of steps).
        eval_batch_size: samples per validation/test batch (default: `batch_size`); every sample is read
            exactly once across ranks, so the last batches of a rank may be smaller.
        num_workers: loader processes per rank; the batch sequence does not depend on it.
        seed: seeds the per-epoch shard and sample shuffle and the per-sample augmentation.
        shuffle_window: training samples are shuffled inside windows of this many consecutive samples of a
            rank's share of the epoch (after shuffling the shard order).
        pin_memory: pin batches for faster host-to-GPU copies.
        retries: URLs only: times a dropped or failed transfer is retried in a row, with backoff, from the
            byte where it broke; then the run stops naming the URL and the byte offset.
        retry_backoff: seconds before the first retry (doubling at each further one).
        cache_dir: URLs only: keep verified local copies of the shards here, so later epochs on this node
            read from disk (random access, like a folder); needed for `multi_view` pairing over URLs.
        cache_size_gb: the cache's size limit; least recently used shards are deleted beyond it.
        lanes: sequential read lanes per rank (`epoch_plan`, rule 5); default 1 for folders (the plan as
            it always was) and `max(1, num_workers)` for URLs, so each worker streams its own shards. The
            batches depend on `lanes`, not on `num_workers`; a resumed run keeps its checkpoint's lanes.
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
        retries: int = 3,
        retry_backoff: float = 1.0,
        cache_dir: str | None = None,
        cache_size_gb: float = 100.0,
        lanes: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if lanes is not None and lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self.data_dir = str(data_dir)
        self.remote = is_remote(self.data_dir)
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.cache = ShardCache(cache_dir, int(cache_size_gb * 2**30)) if cache_dir and self.remote else None
        self.lanes = lanes if lanes is not None else (max(1, num_workers) if self.remote else 1)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle_window = shuffle_window
        self.pin_memory = pin_memory
        self.manifests: dict[str, Manifest] = {}
        self._loaders: dict[str, ResumableLoader] = {}

    # -- what subclasses provide -------------------------------------------------------------------
    def example_fn(self, split: str, train: bool) -> ExampleFn:
        """A picklable callable (sample, rng) -> example dict for `split`; augment when `train`."""
        raise NotImplementedError

    def collate_fn(self, split: str, train: bool) -> CollateFn:
        """A picklable callable turning a list of examples into the batch of data contract §3."""
        raise NotImplementedError

    def key_locations(self, split: str) -> dict[str, tuple[int, int]] | None:
        """Override to give workers key -> (shard, offset) for reading other samples (multi-view pairing)."""
        return None

    # -- Lightning hooks -----------------------------------------------------------------------------
    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _load_manifest(self, split: str) -> Manifest:
        manifest = load_manifest(self.data_dir, split, retries=self.retries, backoff=self.retry_backoff)
        return dataclasses.replace(manifest, cache=self.cache) if self.cache is not None else manifest

    def setup(self, stage: str | None = None) -> None:
        # `validate` is read lazily under `fit`: a run without a validation split (or validation step) is fine.
        wanted = {"fit": ("train",), "validate": ("validate",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage or "fit", ("train", "validate", "test")):
            if split not in self.manifests:
                self.manifests[split] = self._load_manifest(split)

    def _loader(self, split: str, train: bool) -> ResumableLoader:
        name = "train" if train else split
        rank, world_size = self._rank()
        if name in self._loaders:
            loader = self._loaders[name]
            loader.dataset.set_rank(rank, world_size)
            return loader
        if split not in self.manifests:
            self.manifests[split] = self._load_manifest(split)
        manifest = self.manifests[split]
        stream = ShardBatchStream(
            manifest,
            batch_size=self.batch_size if train else self.eval_batch_size,
            make_example=self.example_fn(split, train),
            collate=self.collate_fn(split, train),
            seed=self.seed,
            shuffle=train,
            drop_last=train,
            shuffle_window=self.shuffle_window,
            key_locations=self.key_locations(split),
            lanes=self.lanes,
        )
        stream.set_rank(rank, world_size)
        if train and len(stream) == 0:
            raise ValueError(
                f"{manifest.where}: {manifest.num_samples} training samples cannot fill one batch of "
                f"{self.batch_size} on each of {world_size} rank(s); lower batch_size or add data"
            )
        if train:
            used = len(stream) * self.batch_size * world_size
            log.info(
                "%s: %d samples, %d batches of %d per rank on %d rank(s); %d samples left out per epoch "
                "(a different set each epoch)",
                split,
                manifest.num_samples,
                len(stream),
                self.batch_size,
                world_size,
                manifest.num_samples - used,
            )
        loader = ResumableLoader(
            stream, num_workers=self.num_workers, cumulative_counts=train, pin_memory=self.pin_memory
        )
        self._loaders[name] = loader
        return loader

    def train_dataloader(self) -> ResumableLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> ResumableLoader:
        return self._loader("validate", train=False)

    def test_dataloader(self) -> ResumableLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> ResumableLoader:
        return self._loader("test", train=False)

    def data_counts(self, stage: str = "train") -> dict[str, int]:
        """This rank's data events: `skipped/<reason>` and e.g. `truncated`; cumulative for `train`, last pass
        for `validate`/`test`."""
        loader = self._loaders.get(stage)
        return dict(loader.counts) if loader is not None else {}

    def skipped_counts(self, stage: str = "train") -> dict[str, int]:
        """Samples skipped on this rank by reason (see `data_counts`)."""
        loader = self._loaders.get(stage)
        return loader.skipped if loader is not None else {}


class SkippedSamplesLogger(Callback):
    """Logs `data/<stage>_skipped` (total), `data/<stage>/skipped/<reason>` and other data events (e.g.
    `data/<stage>/truncated`), summed over ranks.

    Training counts are cumulative over the run (they survive a resume); validation/test counts are per
    pass. Counts are gathered as objects first so every rank logs the same keys (no DDP mismatch).
    """

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, ShardDataModule):
            return
        total: Counter[str] = Counter()
        for counts in gather_objects(datamodule.data_counts(stage)):
            total.update(counts)
        skipped = sum(count for name, count in total.items() if name.startswith(SKIPPED_PREFIX))
        pl_module.log(f"data/{stage}_skipped", float(skipped), rank_zero_only=True)
        for name, count in sorted(total.items()):
            pl_module.log(f"data/{stage}/{name}", float(count), rank_zero_only=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, pl_module, "validate")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module, "test")


def index_keys(manifest: Manifest) -> dict[str, tuple[int, int]]:
    """key -> (shard index, offset) over a split, read from the tar headers (for multi-view pairing).

    Remote shards need a cache (`cache_dir`): the index and the partner reads use the local copies."""
    return ShardReader(manifest).key_locations()


def existing_splits(data_dir: str | Path) -> list[str]:
    """Splits of `data_dir` that have a manifest (for error messages and tools)."""
    return [split for split in ("train", "validate", "test") if (Path(data_dir) / split / "manifest.json").is_file()]
