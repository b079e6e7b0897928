"""`ZeroStrategy` fills DeepSpeed's micro batch from the DataModule and refuses a JSON that contradicts it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("deepspeed")

from lit_medxchat.training.strategies import ConfigConflictError, ZeroStrategy, deepspeed_strategy  # noqa: E402


def _attached(strategy: ZeroStrategy, batch_size: int, accumulate: int = 1, world_size: int = 2) -> ZeroStrategy:
    """The strategy as Lightning leaves it before set-up: a module whose trainer holds a DataModule."""
    trainer = SimpleNamespace(datamodule=SimpleNamespace(batch_size=batch_size), accumulate_grad_batches=accumulate,
                              world_size=world_size, gradient_clip_val=None)
    strategy._lightning_module = SimpleNamespace(trainer=trainer)
    return strategy


def test_the_shipped_json_gets_the_datamodules_batch_and_the_trainers_accumulation() -> None:
    strategy = _attached(deepspeed_strategy("zero2"), batch_size=6, accumulate=3)
    strategy._format_batch_size_and_grad_accum_config()
    assert strategy.config["train_micro_batch_size_per_gpu"] == 6
    assert strategy.config["gradient_accumulation_steps"] == 3
    assert strategy.config["gradient_clipping"] == 1.0  # the JSON's own value is kept


def test_a_micro_batch_that_contradicts_the_datamodule_is_refused_naming_both() -> None:
    config = {"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 3}
    strategy = _attached(ZeroStrategy(config=config), batch_size=2)
    with pytest.raises(ConfigConflictError, match=r"train_micro_batch_size_per_gpu=3 .* batch_size is 2"):
        strategy._format_batch_size_and_grad_accum_config()


def test_a_train_batch_size_that_contradicts_batch_accumulation_and_ranks_is_refused() -> None:
    config = {"zero_optimization": {"stage": 2}, "train_batch_size": 16}
    strategy = _attached(ZeroStrategy(config=config), batch_size=2, accumulate=2, world_size=2)
    expected = r"train_batch_size=16 .* batch_size 2 x accumulate_grad_batches 2 x 2"
    with pytest.raises(ConfigConflictError, match=expected):
        strategy._format_batch_size_and_grad_accum_config()
    agreeing = _attached(ZeroStrategy(config={**config, "train_batch_size": 8}), batch_size=2, accumulate=2)
    agreeing._format_batch_size_and_grad_accum_config()
    assert agreeing.config["train_micro_batch_size_per_gpu"] == 2


def test_an_unknown_config_name_lists_the_shipped_ones() -> None:
    with pytest.raises(FileNotFoundError, match="zero2, zero3, zero3_offload"):
        ZeroStrategy(config="zero9")
