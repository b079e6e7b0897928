"""Every chat training batch carries its optimiser step's answer tokens, grouped as Lightning accumulates."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from datamodules.chat import ChatDataModule
from datamodules.step_totals import StepTotals
from lit_medxchat.core.conversation import STEP_ANSWER_TOKENS, supervised_tokens


def _chat_module(shard_dir, tokenizer_dir, accumulate: int) -> ChatDataModule:
    module = ChatDataModule(str(shard_dir), str(tokenizer_dir), batch_size=3, num_workers=0, image_size=16,
                            num_image_tokens=3, max_length=512)
    module.trainer = SimpleNamespace(accumulate_grad_batches=accumulate, global_rank=0, world_size=1)
    module.setup("fit")
    return module


def _expected_totals(counts: list[int], accumulate: int, start: int = 0) -> list[int]:
    """Lightning's groups: batch i closes a step when (i + 1) % accumulate == 0 or it is the epoch's last."""
    totals, group = [], []
    for index, count in enumerate(counts, start=start):
        group.append(count)
        if (index + 1) % accumulate == 0 or index == start + len(counts) - 1:
            totals += [sum(group)] * len(group)
            group = []
    return totals


@pytest.mark.parametrize("accumulate", [1, 2, 5])
def test_each_batch_carries_the_answer_tokens_of_its_step(shard_dir, tokenizer_dir, accumulate):
    """Proves: the loader's look-ahead groups batches exactly as Lightning's accumulation (the last step of the
    epoch may be short) and the total is the sum of the group's supervised tokens; no batch lost or reordered."""
    module = _chat_module(shard_dir, tokenizer_dir, accumulate)
    batches = list(module.train_dataloader())
    assert len(batches) == 12  # 37 samples, 3 per batch: 12 full batches (5 does not divide 12)
    counts = [supervised_tokens(batch["labels"]) for batch in batches]
    assert [batch[STEP_ANSWER_TOKENS] for batch in batches] == _expected_totals(counts, accumulate)
    plain = _chat_module(shard_dir, tokenizer_dir, accumulate).train_dataloader()
    plain.step_totals = None
    assert [batch["keys"] for batch in plain] == [batch["keys"] for batch in batches]


def test_a_resumed_epoch_groups_from_the_saved_step(shard_dir, tokenizer_dir):
    """Proves: resumed after 4 batches (2 steps of 2), the rest of the epoch gets the same step totals as the
    uninterrupted run, and the saved position counts only the batches handed out, not those read ahead."""
    module = _chat_module(shard_dir, tokenizer_dir, accumulate=2)
    loader = module.train_dataloader()
    whole = [batch[STEP_ANSWER_TOKENS] for batch in loader]
    iterator = iter(loader)
    for _ in range(4):
        next(iterator)
    state = loader.state_dict()
    assert state["ranks"][0]["batches"] == 4
    resumed_module = _chat_module(shard_dir, tokenizer_dir, accumulate=2)
    resumed = resumed_module.train_dataloader()
    resumed.load_state_dict(state)
    assert [batch[STEP_ANSWER_TOKENS] for batch in resumed] == whole[4:]


def test_accumulate_must_be_positive():
    with pytest.raises(ValueError, match="accumulate must be >= 1"):
        StepTotals("key", len, accumulate=0)
