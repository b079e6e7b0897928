"""The blank-image baseline sees the same tokens and tensor shapes as the real model, and no pixels."""

from __future__ import annotations

from pathlib import Path

import torch

from datamodules.chat import ChatDataModule


def _first_test_batch(shards: Path, tokenizer: Path, blank: bool) -> dict:
    data = ChatDataModule(str(shards), str(tokenizer), batch_size=4, num_workers=0, seed=0, num_image_tokens=4,
                          image_size=64, max_length=256, task_weights={"report": 1.0}, augment=False,
                          blank_images=blank)
    data.setup("test")
    return next(iter(data.test_dataloader()))


def test_blank_images_keep_tokens_and_shapes_but_drop_pixels(synth_shards: Path, chat_tokenizer: Path) -> None:
    real = _first_test_batch(synth_shards, chat_tokenizer, blank=False)
    blank = _first_test_batch(synth_shards, chat_tokenizer, blank=True)
    assert torch.equal(real["input_ids"], blank["input_ids"])
    assert torch.equal(real["labels"], blank["labels"])
    assert torch.equal(real["image_mask"], blank["image_mask"])
    assert real["pixel_values"].shape == blank["pixel_values"].shape
    assert real["pixel_values"].abs().sum() > 0
    assert blank["pixel_values"].abs().sum() == 0
