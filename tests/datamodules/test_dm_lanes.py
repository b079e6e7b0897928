"""The epoch plan's read lanes (shards behind URLs): same guarantees as the random-access plan, sequential lanes."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.epoch_plan import rank_batches, shard_order

SIZES = [10, 3, 17, 8, 12, 9, 1, 14]


def _plan(rank: int, world_size: int, lanes: int, *, train: bool = True, epoch: int = 2, window: int = 6):
    return rank_batches(SIZES, rank=rank, world_size=world_size, batch_size=4, seed=7, epoch=epoch, shuffle=train,
                        drop_last=train, shuffle_window=window, lanes=lanes)


def _positions(batch: np.ndarray, epoch: int, shuffle: bool = True) -> list[int]:
    """Place of each (shard, offset) in the epoch's stream of shards."""
    order = shard_order(len(SIZES), seed=7, epoch=epoch, shuffle=shuffle)
    starts = dict(zip(order.tolist(), np.cumsum([0] + [SIZES[s] for s in order])[:-1].tolist(), strict=True))
    return [starts[int(s)] + int(o) for s, o in batch]


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("lanes", [2, 3, 4])
def test_lanes_keep_step_counts_and_disjoint_full_batches(world_size, lanes):
    plans = [_plan(rank, world_size, lanes) for rank in range(world_size)]
    reference = [_plan(rank, world_size, 1) for rank in range(world_size)]
    assert [len(plan) for plan in plans] == [len(plan) for plan in reference], "same steps as one lane"
    assert len({len(plan) for plan in plans}) == 1, "every rank runs the same number of steps"
    seen = [tuple(row) for plan in plans for batch in plan for row in batch.tolist()]
    assert all(len(batch) == 4 for plan in plans for batch in plan)
    assert len(seen) == len(set(seen))
    for rank, plan in enumerate(plans):  # the rank reads the same samples as with one lane, dealt otherwise
        ours = sorted(tuple(row) for batch in plan for row in batch.tolist())
        assert set(ours) <= {(s, o) for s, size in enumerate(SIZES) for o in range(size)}
        assert len(ours) == len(plan) * 4
        assert [batch.tolist() for batch in plan] != [batch.tolist() for batch in reference[rank]]


@pytest.mark.parametrize("lanes", [2, 3])
def test_each_lane_is_a_contiguous_run_of_the_stream_shuffled_within_windows(lanes):
    plan = _plan(0, 1, lanes, window=6)
    lane_positions = [[p for k in range(lane, len(plan), lanes) for p in _positions(plan[k], 2)]
                      for lane in range(lanes)]
    ends = []
    for consumed in lane_positions:
        ordered = sorted(consumed)
        ends.append((ordered[0], ordered[-1]))
        assert ordered == list(range(ordered[0], ordered[0] + len(ordered))) or consumed is lane_positions[-1]
        assert consumed != ordered, "shuffled inside the lane"
        # bounded read-ahead: no sample is consumed more than a window away from its place in the file
        assert max(abs(i - (p - ordered[0])) for i, p in enumerate(consumed)) < 6 + 4
    assert [start for start, _ in ends] == sorted(start for start, _ in ends), "lanes follow each other"


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_evaluation_with_lanes_reads_every_sample_once_across_ranks(world_size):
    plans = [_plan(rank, world_size, 3, train=False) for rank in range(world_size)]
    seen = [tuple(row) for plan in plans for batch in plan for row in batch.tolist()]
    assert sorted(seen) == [(s, o) for s, size in enumerate(SIZES) for o in range(size)]
    assert len({len(plan) for plan in plans}) == 1
    again = [_plan(rank, world_size, 3, train=False, epoch=5) for rank in range(world_size)]
    assert [[b.tolist() for b in plan] for plan in plans] == [[b.tolist() for b in plan] for plan in again]


def test_lanes_must_be_positive():
    with pytest.raises(ValueError, match="lanes must be >= 1"):
        _plan(0, 1, 0)
