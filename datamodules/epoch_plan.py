"""Which samples each rank and worker reads, batch by batch, in one epoch: a pure function of the manifest.

Everything a loader does is derived from `(manifest counts, seed, epoch, rank, world_size, batch_size)`,
so resuming needs nothing but "epoch e, batch k" and every process can recompute its own share:

1. The epoch's shard order is a permutation drawn from `(seed, epoch)` (identity when not shuffling);
   concatenating the shards in that order gives the epoch's *global stream* of `N` samples.
2. Rank `r` reads one contiguous slice of that stream (split by node): whole shards plus at most two
   partial ones, so each rank touches about `1 / world_size` of the files.
   - training: every rank gets `N // world_size` samples, then `// batch_size` full batches, so all ranks
     run the same number of steps whatever the shard sizes (no DDP hang at epoch end); the few samples
     left over are a different set each epoch because the shard order changes;
   - evaluation: the slices partition the stream exactly (sizes differ by at most one) and every rank
     gets the same number of batches (the last ones a little smaller when needed): every sample is read
     exactly once across ranks, never padded with duplicates.
3. Within its slice a rank shuffles samples inside windows of `shuffle_window` consecutive samples,
   drawn from `(seed, epoch, rank, window)`: random order with local file access (the role of a
   WebDataset shuffle buffer, but reproducible without saving the buffer).
4. Batch `k` of the rank is read by worker `k % num_workers` (split by worker). The DataLoader collects
   worker outputs round-robin, so the rank's batch sequence does not depend on `num_workers`.
5. With `lanes = L > 1` (the default for shards behind a URL, which are read front to back), the rank's
   slice is cut into `L` contiguous *lanes* and batch `k` comes from lane `k % L`: each lane is a short run of
   whole shards read sequentially, shuffled in windows seeded by `(seed, epoch, rank, lane, window)`. When
   `num_workers` divides `L`, every lane is read by exactly one worker. `lanes = 1` is rule 3 exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# (shard index into the manifest's shard list, sample offset inside that shard), one row per sample.
Batch = np.ndarray


def shard_order(num_shards: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's shard permutation (identity when `shuffle` is False)."""
    if not shuffle:
        return np.arange(num_shards)
    return np.random.default_rng([seed, epoch, 0x5A4D]).permutation(num_shards)


def rank_slice(total: int, *, rank: int, world_size: int, drop_remainder: bool) -> tuple[int, int]:
    """`[start, stop)` of the epoch's global stream read by `rank`."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    if drop_remainder:
        share = total // world_size
        return rank * share, (rank + 1) * share
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def eval_batch_sizes(count: int, *, max_count: int, batch_size: int) -> list[int]:
    """Batch sizes for `count` samples such that every rank (at most `max_count` samples) has as many batches.

    Batches are full first; the shortfall against the largest rank is taken from the last batches, each
    keeping at least one sample. Only when `count` is below the batch count (e.g. batch_size 1) does a rank
    get fewer batches: we never invent samples.
    """
    num_batches = math.ceil(max_count / batch_size) if max_count else 0
    sizes = [batch_size] * num_batches
    excess = num_batches * batch_size - count
    for index in range(num_batches - 1, -1, -1):
        if excess <= 0:
            break
        take = min(excess, sizes[index] - 1) if count >= num_batches else min(excess, sizes[index])
        sizes[index] -= take
        excess -= take
    return [size for size in sizes if size > 0]


def rank_batches(
    shard_sizes: Sequence[int],
    *,
    rank: int,
    world_size: int,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool,
    drop_last: bool,
    shuffle_window: int = 1024,
    lanes: int = 1,
) -> list[Batch]:
    """The batches of `rank` for `epoch`, each an int64 array (batch, 2) of (shard index, offset).

    `drop_last=True` (training) gives equal full batches on every rank; `False` (evaluation) covers the
    stream exactly once across ranks. See the module docstring for the full rule; `lanes > 1` deals the
    rank's slice into sequential lanes (`lane_batches`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if lanes < 1:
        raise ValueError(f"lanes must be >= 1, got {lanes}")
    if lanes > 1:
        return lane_batches(shard_sizes, rank=rank, world_size=world_size, batch_size=batch_size, seed=seed,
                            epoch=epoch, shuffle=shuffle, drop_last=drop_last, shuffle_window=shuffle_window,
                            lanes=lanes)
    sizes = np.asarray(shard_sizes, dtype=np.int64)
    order = shard_order(len(sizes), seed=seed, epoch=epoch, shuffle=shuffle)
    ends = np.cumsum(sizes[order])
    total = int(ends[-1]) if len(ends) else 0
    start, stop = rank_slice(total, rank=rank, world_size=world_size, drop_remainder=drop_last)
    positions = np.arange(start, stop, dtype=np.int64)
    if shuffle and shuffle_window > 1:
        for window_start in range(0, len(positions), shuffle_window):
            window = positions[window_start : window_start + shuffle_window]
            rng = np.random.default_rng([seed, epoch, rank, window_start // shuffle_window])
            positions[window_start : window_start + shuffle_window] = rng.permutation(window)
    slots = np.searchsorted(ends, positions, side="right")
    offsets = positions - (ends[slots] - sizes[order][slots])
    samples = np.stack([order[slots], offsets], axis=1) if len(positions) else np.zeros((0, 2), dtype=np.int64)

    if drop_last:
        num_batches = len(samples) // batch_size
        return [samples[k * batch_size : (k + 1) * batch_size] for k in range(num_batches)]
    largest = rank_slice(total, rank=0, world_size=world_size, drop_remainder=False)
    batch_sizes = eval_batch_sizes(len(samples), max_count=largest[1] - largest[0], batch_size=batch_size)
    bounds = np.cumsum([0, *batch_sizes])
    return [samples[bounds[k] : bounds[k + 1]] for k in range(len(batch_sizes))]


def worker_batch_indices(num_batches: int, *, start: int, worker: int, num_workers: int) -> range:
    """Batch indices worker `worker` produces when the epoch resumes at batch `start`.

    Batch `start + j` belongs to worker `j % num_workers`, matching the DataLoader's round-robin so the
    loader yields batches `start, start + 1, ...` in order.
    """
    return range(start + worker, num_batches, max(1, num_workers))


def _lane_layout(batch_sizes: list[int], lanes: int, total: int) -> list[tuple[int, int, list[int]]]:
    """(first position, sample count, batch indices) of each lane: lane `l` holds batches `l, l + L, ...`.

    The rank's samples beyond its batches (training's remainder) go to the last lane, like the tail that
    rule 3 shuffles and then leaves out.
    """
    layout, start = [], 0
    for lane in range(lanes):
        indices = list(range(lane, len(batch_sizes), lanes))
        count = sum(batch_sizes[k] for k in indices)
        if lane == lanes - 1:
            count = total - start
        layout.append((start, count, indices))
        start += count
    return layout


def lane_batches(
    shard_sizes: Sequence[int],
    *,
    rank: int,
    world_size: int,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool,
    drop_last: bool,
    shuffle_window: int,
    lanes: int,
) -> list[Batch]:
    """`rank_batches` for `lanes > 1`: the same slice, sizes and guarantees, dealt into sequential lanes."""
    sizes = np.asarray(shard_sizes, dtype=np.int64)
    order = shard_order(len(sizes), seed=seed, epoch=epoch, shuffle=shuffle)
    ends = np.cumsum(sizes[order])
    total = int(ends[-1]) if len(ends) else 0
    start, stop = rank_slice(total, rank=rank, world_size=world_size, drop_remainder=drop_last)
    positions = np.arange(start, stop, dtype=np.int64)
    if drop_last:
        batch_sizes = [batch_size] * (len(positions) // batch_size)
    else:
        largest = rank_slice(total, rank=0, world_size=world_size, drop_remainder=False)
        batch_sizes = eval_batch_sizes(len(positions), max_count=largest[1] - largest[0], batch_size=batch_size)
    batches: list[Batch] = [np.zeros((0, 2), dtype=np.int64)] * len(batch_sizes)
    for lane, (first, count, indices) in enumerate(_lane_layout(batch_sizes, lanes, len(positions))):
        lane_positions = positions[first : first + count].copy()
        if shuffle and shuffle_window > 1:
            for window_start in range(0, count, shuffle_window):
                rng = np.random.default_rng([seed, epoch, rank, lane, window_start // shuffle_window])
                window = lane_positions[window_start : window_start + shuffle_window]
                lane_positions[window_start : window_start + shuffle_window] = rng.permutation(window)
        slots = np.searchsorted(ends, lane_positions, side="right")
        offsets = lane_positions - (ends[slots] - sizes[order][slots])
        samples = np.stack([order[slots], offsets], axis=1) if count else np.zeros((0, 2), dtype=np.int64)
        cursor = 0
        for k in indices:
            batches[k] = samples[cursor : cursor + batch_sizes[k]]
            cursor += batch_sizes[k]
    return batches
