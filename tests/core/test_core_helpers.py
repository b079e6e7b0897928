"""The shared helpers in `lit_medxchat.core` that every layer above relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lit_medxchat.core.auroc import binary_auroc, macro_auroc, per_label_auroc
from lit_medxchat.core.distributed import broadcast_object, gather_lists, gather_objects, global_rank, world_size
from lit_medxchat.core.dtypes import resolve_dtype
from lit_medxchat.core.schedules import linear_warmup, warmup_cosine


def test_macro_auroc_skips_ignored_entries_and_labels_without_both_classes() -> None:
    targets = np.array([[1, 0, 1], [0, 0, -1], [1, 0, 0], [0, 0, 1]])
    scores = np.array([[0.9, 0.1, 0.2], [0.2, 0.3, 0.99], [0.4, 0.2, 0.7], [0.5, 0.4, 0.6]])
    values = per_label_auroc(targets, scores)
    assert values[0] == pytest.approx(binary_auroc([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.5]))
    assert math.isnan(values[1])  # no positive
    # the ignored row (-1, score 0.99) would make label 2 perfect-negative if it were counted
    assert values[2] == pytest.approx(binary_auroc([1, 0, 1], [0.2, 0.7, 0.6]))
    assert macro_auroc(targets, scores) == pytest.approx((values[0] + values[2]) / 2)
    assert math.isnan(macro_auroc(np.zeros((3, 2)), np.random.default_rng(0).random((3, 2))))


def test_per_label_auroc_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N, L\)"):
        per_label_auroc(np.zeros((4, 2)), np.zeros((4, 3)))


def test_warmup_rises_linearly_and_cosine_ends_at_zero() -> None:
    warmup = linear_warmup(4)
    assert [warmup(step) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert linear_warmup(0)(0) == 1.0
    cosine = warmup_cosine(2, 10)
    assert cosine(0) == 0.5 and cosine(2) == 1.0
    assert cosine(6) == pytest.approx(0.5)
    assert cosine(10) == pytest.approx(0.0) and cosine(50) == pytest.approx(0.0)


def test_dtype_names_resolve_and_a_wrong_one_names_the_option() -> None:
    assert resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match=r"llm\.frozen_dtype='fp16' is not one of"):
        resolve_dtype("fp16", "llm.frozen_dtype")


def test_collectives_are_a_world_of_one_without_a_process_group() -> None:
    assert (world_size(), global_rank()) == (1, 0)
    item = {"image": torch.ones(2, requires_grad=True)}
    (gathered,) = gather_objects(item)
    assert not gathered["image"].requires_grad  # detached copies: gathering never ships autograd graphs
    assert gather_lists([1, 2]) == [1, 2]
    assert broadcast_object("rank 0") == "rank 0"
