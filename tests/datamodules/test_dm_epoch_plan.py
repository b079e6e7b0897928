"""Epoch plans: equal training steps on every rank, exact-once evaluation coverage, reproducible shuffles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from datamodules.epoch_plan import eval_batch_sizes, rank_batches, worker_batch_indices

SHARDS = [10, 10, 10, 7, 1, 13]  # uneven on purpose: 51 samples


def _samples(batches) -> list[tuple[int, int]]:
    return [tuple(row) for batch in batches for row in batch.tolist()]


@pytest.mark.parametrize("world_size,batch_size", [(1, 4), (2, 4), (3, 5), (4, 3), (8, 2)])
def test_training_ranks_get_equal_full_batches_of_disjoint_samples(world_size, batch_size):
    for epoch in range(3):
        plans = [rank_batches(SHARDS, rank=r, world_size=world_size, batch_size=batch_size, seed=7, epoch=epoch,
                              shuffle=True, drop_last=True, shuffle_window=8) for r in range(world_size)]
        assert len({len(plan) for plan in plans}) == 1, "every rank must run the same number of steps"
        assert len(plans[0]) == (sum(SHARDS) // world_size) // batch_size
        assert all(len(batch) == batch_size for plan in plans for batch in plan)
        samples = [s for plan in plans for s in _samples(plan)]
        assert len(samples) == len(set(samples)), "a sample was dealt twice in one epoch"
        for shard, offset in samples:
            assert 0 <= offset < SHARDS[shard]


def test_shuffle_is_reproducible_and_changes_with_epoch():
    def plan(epoch, seed=7):
        return _samples(rank_batches(SHARDS, rank=0, world_size=2, batch_size=4, seed=seed, epoch=epoch,
                                     shuffle=True, drop_last=True, shuffle_window=8))

    assert plan(0) == plan(0)
    assert plan(0) != plan(1)
    assert plan(0, seed=8) != plan(0)
    # a rank reads mostly whole shards (split by node): few shards are touched
    assert len({shard for shard, _ in plan(0)}) <= 4


@pytest.mark.parametrize("total_shards", [[7], [4, 3], [1, 1, 1, 1, 1, 1, 1], [5, 0, 6]])
def test_evaluation_reads_every_sample_exactly_once(total_shards):
    total = sum(total_shards)
    for world_size, batch_size in itertools.product((1, 2, 3, 4), (1, 2, 3, 8)):
        plans = [rank_batches(total_shards, rank=r, world_size=world_size, batch_size=batch_size, seed=0,
                              epoch=0, shuffle=False, drop_last=False) for r in range(world_size)]
        samples = [s for plan in plans for s in _samples(plan)]
        assert sorted(samples) == sorted(set(samples)) and len(samples) == total
        assert all(0 < len(batch) <= batch_size for plan in plans for batch in plan)
        if batch_size > 1 and total >= world_size:
            assert len({len(plan) for plan in plans}) == 1, (world_size, batch_size)


def test_eval_batch_sizes_trim_the_tail_only():
    assert eval_batch_sizes(50, max_count=50, batch_size=32) == [32, 18]
    assert eval_batch_sizes(3, max_count=4, batch_size=2) == [2, 1]
    assert eval_batch_sizes(0, max_count=1, batch_size=4) == []
    assert eval_batch_sizes(2, max_count=3, batch_size=1) == [1, 1]


def test_workers_split_batches_round_robin_from_the_resume_point():
    for start, workers in itertools.product(range(0, 7), (1, 2, 3)):
        owned = [list(worker_batch_indices(10, start=start, worker=w, num_workers=workers)) for w in range(workers)]
        merged = sorted(i for batch_ids in owned for i in batch_ids)
        assert merged == list(range(start, 10))
        # the DataLoader takes one batch per worker in turn: that order must be start, start + 1, ...
        order = [owned[j % workers][j // workers] for j in range(10 - start)]
        assert order == list(range(start, 10))


def test_rank_outside_world_is_an_error():
    with pytest.raises(ValueError, match="rank 2"):
        rank_batches([4], rank=2, world_size=2, batch_size=1, seed=0, epoch=0, shuffle=False, drop_last=False)
    assert np.array_equal(
        rank_batches([4], rank=0, world_size=1, batch_size=2, seed=0, epoch=0, shuffle=False, drop_last=False)[0],
        np.array([[0, 0], [0, 1]]),
    )
