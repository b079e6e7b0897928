"""Front-to-back reading of remote shards for one loader worker, serving exactly the samples its batches name.

A worker knows from the epoch plan every (shard, offset) it will need and in which order. For each lane
it reads (`epoch_plan`, rule 5) it streams the lane's shards in epoch order through webdataset's tar
iterators, keeps the samples it needs until their batch comes (at most about one shuffle window: the plan
only permutes within windows) and reads past the others without decoding them. Resuming at batch `k` is
therefore "re-open shard s, skip to sample o": no random access, no saved shuffle buffer.

A shard streamed to its end is checked against the manifest: sample count and sha256. A shard that holds
fewer or more samples, or other bytes, stops the run (`ShardMismatchError`) naming its URL.
"""

from __future__ import annotations

import tarfile
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np

from datamodules.epoch_plan import shard_order
from datamodules.manifest import Manifest
from datamodules.shard_reader import RawSample, ShardMismatchError


def shard_samples(manifest: Manifest, shard_index: int) -> Iterator[RawSample]:
    """Every sample of remote shard `shard_index` in tar order; exhausting it checks count and sha256."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    info = manifest.shards[shard_index]
    stream = manifest.open_stream(shard_index)
    url = stream.url
    count = 0
    try:
        files = ({**member, "__url__": url} for member in tar_file_iterator(stream))
        for grouped in group_by_keys(files):
            if count >= info.num_samples:
                raise ShardMismatchError(f"{url} holds more than the {info.num_samples} samples its manifest "
                                         "says: the shard changed after the manifest was written; re-run prepare")
            members = {ext: data for ext, data in grouped.items() if not ext.startswith("__")}
            yield RawSample(grouped["__key__"], members, info.name, shard_index, count)
            count += 1
        while stream.read(1 << 16):  # the tar's end-of-archive padding: the digest covers the whole file
            pass
    except tarfile.TarError as error:
        raise ShardMismatchError(f"{url} is not a readable tar at byte {stream.position} ({error}): the shard "
                                 "is damaged; re-run prepare or re-upload it") from error
    finally:
        stream.close()
    if count != info.num_samples:
        raise ShardMismatchError(f"{url} holds {count} samples but its manifest says {info.num_samples}: the shard "
                                 "changed after the manifest was written; re-run prepare")
    if info.sha256 and stream.sha256 != info.sha256:
        raise ShardMismatchError(f"{url} has sha256 {stream.sha256} but its manifest says {info.sha256}: the "
                                 "shard changed after the manifest was written; re-run prepare")


def _lane_samples(manifest: Manifest, wanted: Sequence[tuple[int, int]]) -> Iterator[RawSample]:
    """The samples `wanted` (in file order: shard by shard, offsets ascending), read front to back."""
    by_shard: dict[int, set[int]] = defaultdict(set)
    shards: list[int] = []
    for shard_index, offset in wanted:
        if shard_index not in by_shard:
            shards.append(shard_index)
        by_shard[shard_index].add(offset)
    for shard_index in shards:
        offsets = by_shard[shard_index]
        last = max(offsets)
        through_end = last == manifest.shards[shard_index].num_samples - 1
        samples = shard_samples(manifest, shard_index)
        try:
            for sample in samples:
                if sample.offset in offsets:
                    yield sample
                if sample.offset == last:
                    if through_end:
                        for _ in samples:  # reach the end: count and sha256 are checked there
                            pass
                    break
            else:
                raise ShardMismatchError(f"{manifest.url(shard_index)} ended before sample {last}: re-run prepare")
        finally:
            samples.close()


class SequentialShardReader:
    """`read(shard, offset)` for one worker's batches, served from front-to-back lane streams.

    `needed` lists the (lane, shard, offset) of every sample the worker will read, in any order; the
    lane's file order is the epoch's shard order (`shard_order`), offsets ascending.
    """

    def __init__(self, manifest: Manifest, needed: Sequence[tuple[int, int, int]], *, seed: int, epoch: int,
                 shuffle: bool) -> None:
        self.manifest = manifest
        position = np.argsort(shard_order(len(manifest.shards), seed=seed, epoch=epoch, shuffle=shuffle))
        per_lane: dict[int, list[tuple[int, int]]] = defaultdict(list)
        self._lane_of: dict[tuple[int, int], int] = {}
        for lane, shard_index, offset in needed:
            per_lane[lane].append((shard_index, offset))
            self._lane_of[(shard_index, offset)] = lane
        self._cursors = {lane: _lane_samples(manifest, sorted(wanted, key=lambda so: (position[so[0]], so[1])))
                         for lane, wanted in per_lane.items()}
        self._buffers: dict[int, dict[tuple[int, int], RawSample]] = defaultdict(dict)

    def read(self, shard_index: int, offset: int) -> RawSample:
        where = (shard_index, offset)
        lane = self._lane_of[where]
        buffer = self._buffers[lane]
        while where not in buffer:
            try:
                sample = next(self._cursors[lane])
            except StopIteration:
                message = f"lane {lane} ended before shard {shard_index} sample {offset}: a planning bug"
                raise RuntimeError(message) from None
            buffer[(sample.shard_index, sample.offset)] = sample
        return buffer.pop(where)

    @property
    def buffered(self) -> int:
        """Samples read ahead and held for later batches (bounded by about one shuffle window per lane)."""
        return sum(len(buffer) for buffer in self._buffers.values())

    def close(self) -> None:
        for cursor in self._cursors.values():
            cursor.close()
