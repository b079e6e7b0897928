"""A batch stream over the shards a manifest lists, for one rank, split by worker, with bad samples counted.

The shards are WebDataset tars (data contract §2); a sample is the run of consecutive members sharing a
key (`<key>.jpg`, `<key>.txt`, ...). We read them with `tarfile` by random access (an index of member
offsets per shard, built from the tar headers on first use) rather than as one sequential pipe, because
it makes three things simple and exact: reading any (shard, offset) the epoch plan names, resuming at any
batch without replaying the stream, and splitting one rank's batches among workers.

Each worker builds whole batches (decode, augment, collate) and yields `(batch, counts)` where `counts`
holds the samples dropped from that batch by reason (and other per-sample events); the resumable loader
strips and sums them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from datamodules.epoch_plan import rank_batches, worker_batch_indices
from datamodules.manifest import Manifest, load_manifest
from datamodules.sequential_reader import SequentialShardReader, shard_samples
from datamodules.shard_reader import RawSample, ShardReader, SkipSample

log = logging.getLogger(__name__)

# Per-batch counts travel with the batch as {name: count}: "skipped/<reason>" for dropped samples, and
# any name an example builder lists under EVENTS_KEY for kept samples worth counting (e.g. "truncated").
SKIPPED_PREFIX = "skipped/"
EVENTS_KEY = "_events"
MAX_SKIP_WARNINGS = 20  # per worker and epoch; later skips are still counted, and logged at DEBUG level


def batch_tensor(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised tensor for a batch; inside a loader worker it lives in shared memory already.

    A batch built in a worker is moved to shared memory when it is sent to the main process; allocating
    it there in the first place (as torch's default collate does) saves one copy of every batch.
    """
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = 1
    for size in shape:
        numel *= size
    storage = torch.UntypedStorage._new_shared(numel * torch.empty((), dtype=dtype).element_size())
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def stack_batch(tensors: list[torch.Tensor]) -> torch.Tensor:
    """`torch.stack` into a `batch_tensor` (shared memory in a worker)."""
    return torch.stack(tensors, out=batch_tensor((len(tensors), *tensors[0].shape), tensors[0].dtype))


def iter_samples(data_dir: str | Path, split: str, *, retries: int = 3) -> Iterator[RawSample]:
    """Every sample of a split once, in shard order: for tools and evaluation (training reads by epoch plan).

    `data_dir` may be a URL location (`datamodules.remote`): its shards are then streamed front to back.
    """
    manifest = load_manifest(data_dir, split, retries=retries)
    if manifest.remote:
        for shard_index in range(len(manifest.shards)):
            yield from shard_samples(manifest, shard_index)
        return
    reader = ShardReader(manifest)
    try:
        for shard_index, shard in enumerate(manifest.shards):
            for offset in range(shard.num_samples):
                yield reader.read(shard_index, offset)
    finally:
        reader.close()


ExampleFn = Callable[[RawSample, np.random.Generator], dict[str, Any]]
CollateFn = Callable[[list[dict[str, Any]]], dict[str, Any]]


class ShardBatchStream(IterableDataset):
    """Batches of one rank for one epoch, produced by the DataLoader's workers (or in-process).

    `make_example(sample, rng)` turns a `RawSample` into one example (or raises `SkipSample` / a decode
    error: the sample is skipped, logged and counted); `collate(examples)` makes the batch. `rng` is seeded
    by (seed, epoch, shard, offset), so augmentation and dialogue choice are identical after a resume and
    for any number of workers. Evaluation streams (`shuffle=False`) use epoch 0 for these seeds so every
    validation pass sees the same examples.

    `set_epoch`, `start_batch` and `set_rank` are set by the loader/DataModule in the main process before
    the workers start (non-persistent workers get a fresh copy each epoch).
    """

    def __init__(
        self,
        manifest: Manifest,
        *,
        batch_size: int,
        make_example: ExampleFn,
        collate: CollateFn,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        shuffle_window: int = 1024,
        key_locations: dict[str, tuple[int, int]] | None = None,
        lanes: int = 1,
    ) -> None:
        super().__init__()
        self.manifest = manifest
        self.lanes = lanes
        self.batch_size = batch_size
        self.make_example = make_example
        self.collate = collate
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.shuffle_window = shuffle_window
        self.key_locations = key_locations
        self.rank, self.world_size = 0, 1
        self.epoch = 0
        self.start_batch = 0
        self._skips_this_pass = 0  # per worker and epoch, to cap the warnings

    def set_rank(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def plan(self, epoch: int | None = None) -> list[np.ndarray]:
        """This rank's batches for `epoch` (default: the current one) as (shard index, offset) rows."""
        return rank_batches(
            self.manifest.shard_sizes,
            rank=self.rank,
            world_size=self.world_size,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=self.epoch if epoch is None else epoch,
            shuffle=self.shuffle,
            drop_last=self.drop_last,
            shuffle_window=self.shuffle_window,
            lanes=self.lanes,
        )

    @property
    def sequential(self) -> bool:
        """Remote shards without a local cache are read front to back (`SequentialShardReader`)."""
        return self.manifest.remote and self.manifest.cache is None

    def _reader(self, batches: list[np.ndarray], indices: range) -> Any:
        """A reader of this pass's samples: random access for folders and cached copies, else sequential."""
        if not self.sequential:
            return ShardReader(self.manifest)
        needed = [(index % self.lanes, int(s), int(o)) for index in indices for s, o in batches[index]]
        return SequentialShardReader(self.manifest, needed, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle)

    def __len__(self) -> int:
        """Batches per epoch on this rank; the same on every rank for training streams.

        Exact for any `num_workers` (the workers split these batches), which is why Lightning's warning that
        an IterableDataset's `__len__` may be inaccurate is silenced (`lit_medxchat.core.quiet`).
        """
        return len(self.plan())

    def _example(
        self, reader: ShardReader, shard_index: int, offset: int, skipped: Counter, worker_id: int
    ) -> dict[str, Any] | None:
        rng_epoch = self.epoch if self.shuffle else 0
        rng = np.random.default_rng([self.seed, rng_epoch, shard_index, offset])

        def lookup(key: str) -> RawSample | None:
            if not self.key_locations or key not in self.key_locations:
                return None
            return reader.read(*self.key_locations[key])

        # Reading is outside the try: a missing or truncated shard, or one that disagrees with the manifest,
        # is fatal (every later sample would fail too); only decoding one sample's members may be skipped.
        sample = reader.read(shard_index, offset)
        sample.lookup = lookup
        try:
            example = self.make_example(sample, rng)
            skipped.update(example.pop(EVENTS_KEY, ()))
            return example
        except SkipSample as error:  # raised where a member is missing or fails to decode (`decode_member`)
            reason, detail = error.reason, error.detail
        skipped[SKIPPED_PREFIX + reason] += 1
        self._skips_this_pass += 1
        where = f"{self.manifest.shards[shard_index].name}: sample {offset} ({sample.key})"
        level = logging.WARNING if self._skips_this_pass <= MAX_SKIP_WARNINGS else logging.DEBUG
        log.log(level, "%s skipped, %s: %s (rank %d worker %d: %d skipped this epoch%s)", where, reason, detail,
                self.rank, worker_id, self._skips_this_pass,
                "; further skips are logged at DEBUG" if self._skips_this_pass == MAX_SKIP_WARNINGS else "")
        return None

    def __iter__(self) -> Iterator[tuple[dict[str, Any], dict[str, int]]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batches = self.plan()
        indices = worker_batch_indices(len(batches), start=self.start_batch, worker=worker, num_workers=num_workers)
        # A reader per iteration: file handles must never be shared with forked workers (shared offsets).
        reader = self._reader(batches, indices)
        self._skips_this_pass = 0
        last_good: dict[str, Any] | None = None
        try:
            for index in indices:
                skipped: Counter = Counter()
                examples = [self._example(reader, int(s), int(o), skipped, worker) for s, o in batches[index]]
                examples = [example for example in examples if example is not None]
                if examples:
                    last_good = self.collate(examples)
                    yield last_good, dict(skipped)
                elif last_good is not None:
                    # Keep the step count identical on every rank: repeat this worker's previous batch.
                    skipped[SKIPPED_PREFIX + "batch-repeated"] += 1
                    log.warning(
                        "every sample of batch %d on rank %d was skipped; repeating the previous batch",
                        index,
                        self.rank,
                    )
                    yield last_good, dict(skipped)
                else:
                    raise RuntimeError(
                        f"every sample of batch {index} (rank {self.rank}, worker {worker}) of split "
                        f"{self.manifest.split!r} was skipped ({dict(skipped)}) and there is no earlier batch to "
                        f"repeat; see the warnings above (fix the options or re-run prepare on "
                        f"{self.manifest.where})"
                    )
        finally:
            reader.close()
