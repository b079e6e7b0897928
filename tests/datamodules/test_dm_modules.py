"""The three DataModules produce the batches of data contract §3 from shards of contract §2."""

from __future__ import annotations

import pytest
import torch
from dm_shards import sample_members

from datamodules.chat import ChatDataModule, partner_key
from datamodules.classifier import ClassifierDataModule, encode_labels
from datamodules.diffusion import DiffusionDataModule
from lit_medxchat.core.constants import CHEXPERT_LABELS, IMAGE_TOKEN, VIEW_CLASSES
from lit_medxchat.core.conversation import IGNORE_INDEX, decode_answer


def _first(loader):
    return next(iter(loader))


@pytest.mark.parametrize("policy,uncertain_target,uncertain_mask", [("zeros", 0.0, 1.0), ("ones", 1.0, 1.0),
                                                                     ("ignore", 0.0, 0.0)])
def test_uncertain_label_policies(policy, uncertain_target, uncertain_mask):
    labels = {"Atelectasis": 1.0, "Cardiomegaly": 0.0, "Consolidation": -1.0, "Edema": None}
    targets, mask = encode_labels(labels, policy)
    assert targets[:3] == [1.0, 0.0, uncertain_target] and mask[:3] == [1.0, 1.0, uncertain_mask]
    assert mask[3] == 0.0 and mask[4:] == [0.0] * 10, "blank or absent labels are never trained on"


def test_blank_labels_read_as_absent_when_asked():
    labels = {"Atelectasis": 1.0, "Consolidation": -1.0, "Edema": None}
    targets, mask = encode_labels(labels, "ignore", blank_policy="zeros")
    assert targets[0] == 1.0 and mask[0] == 1.0
    assert mask[2] == 0.0, "uncertain stays under the uncertain policy"
    assert targets[3] == 0.0 and mask[3] == 1.0 and mask[4:] == [1.0] * 10, "blank = not mentioned = absent"
    with pytest.raises(ValueError, match="blank_policy"):
        encode_labels(labels, "ignore", blank_policy="ones")


def test_classifier_batch(shard_dir):
    module = ClassifierDataModule(str(shard_dir), batch_size=4, num_workers=0, image_size=32, uncertain_policy="ones")
    module.setup("fit")
    batch = _first(module.train_dataloader())
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert batch["view"].dtype == torch.long and batch["labels"].shape == batch["label_mask"].shape == (4, 14)
    for row, key in enumerate(batch["keys"]):
        index = int(key.split("-")[1])
        expected = sample_members(index, "train", 32)
        meta = __import__("json").loads(expected["json"])
        assert VIEW_CLASSES[batch["view"][row]] == meta["view"]
        for column, name in enumerate(CHEXPERT_LABELS):
            value = meta["labels"][name]
            assert batch["label_mask"][row, column] == (0.0 if value is None else 1.0)
            assert batch["labels"][row, column] == (1.0 if value in (1.0, -1.0) else 0.0)


def test_diffusion_batch(shard_dir):
    module = DiffusionDataModule(str(shard_dir), batch_size=2, num_workers=0, resolution=32, augment=True)
    module.setup("fit")
    batch = _first(module.train_dataloader())
    pixels = batch["pixel_values"]
    assert pixels.shape == (2, 3, 32, 32) and pixels.min() >= -1 and pixels.max() <= 1
    assert all(text.split(" ")[0] in ("PA", "Lateral") and "findings:" in text for text in batch["text"])
    assert batch["labels"].shape == (2, 14) and batch["view"].shape == (2,) and len(batch["keys"]) == 2
    with pytest.raises(ValueError, match="divisible by 8"):
        DiffusionDataModule(str(shard_dir), resolution=30)


def _chat(shard_dir, tokenizer_dir, **options) -> ChatDataModule:
    options = {"batch_size": 4, "num_workers": 0, "image_size": 16, "num_image_tokens": 3, "max_length": 512,
               **options}
    module = ChatDataModule(str(shard_dir), str(tokenizer_dir), **options)
    module.setup("fit")
    return module


def test_chat_training_batch_follows_the_contract(shard_dir, tokenizer_dir):
    module = _chat(shard_dir, tokenizer_dir, multi_view=True)
    tokenizer = module.tokenizer
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    seen_tasks, seen_pairs = set(), 0
    for batch in module.train_dataloader():
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        assert ids.shape == mask.shape == labels.shape and ids.dtype == torch.long
        assert batch["pixel_values"].shape[:2] == batch["image_mask"].shape and batch["pixel_values"].shape[2:] == (
            3, 16, 16)
        for row, task in enumerate(batch["tasks"]):
            seen_tasks.add(task)
            length = int(mask[row].sum())
            assert mask[row, :length].all() and not mask[row, length:].any(), "right padding"
            assert (labels[row, length:] == IGNORE_INDEX).all()
            images = int(batch["image_mask"][row].sum())
            assert int((ids[row] == image_id).sum()) == 3 * images, "num_image_tokens per real image"
            # every study has a PA and a lateral in the shards, except dicom-00036's (its partner was not written)
            expected = 0 if task == "t2i" else 1 if batch["keys"][row] == "dicom-00036" else 2
            assert images == expected, "multi-view pairs a study's views when both are in the shards"
            seen_pairs += images == 2
            supervised = labels[row][labels[row] != IGNORE_INDEX]
            assert len(supervised) > 0 and supervised[-1] == tokenizer.eos_token_id
    assert seen_tasks == {"report", "vqa", "t2i"} and seen_pairs > 0


def test_task_weights_and_single_view(shard_dir, tokenizer_dir):
    module = _chat(shard_dir, tokenizer_dir, task_weights={"t2i": 1.0, "report": 0.0})
    batch = _first(module.train_dataloader())
    assert batch["tasks"] == ["t2i"] * 4 and not batch["image_mask"].any()
    module = _chat(shard_dir, tokenizer_dir, task_weights={"report": 1.0})
    batch = _first(module.train_dataloader())
    assert batch["tasks"] == ["report"] * 4 and batch["image_mask"].all() and batch["image_mask"].shape == (4, 1)
    with pytest.raises(ValueError, match="task_weights"):
        ChatDataModule(str(shard_dir), str(tokenizer_dir), task_weights={"caption": 1.0})


def test_chat_validation_batch_has_left_padded_prompts_and_references(shard_dir, tokenizer_dir):
    module = _chat(shard_dir, tokenizer_dir, eval_batch_size=4, multi_view=True)
    tokenizer = module.tokenizer
    batches = list(module.val_dataloader())
    assert [len(batch["keys"]) for batch in batches] == [4, 3]
    for batch in batches:
        prompt, prompt_mask = batch["prompt_input_ids"], batch["prompt_attention_mask"]
        for row, reference in enumerate(batch["references"]):
            size = int(prompt_mask[row].sum())
            assert prompt_mask[row, -size:].all() and not prompt_mask[row, :-size].any(), "left padding"
            real_prompt = prompt[row, -size:]
            assert torch.equal(batch["input_ids"][row, :size], real_prompt), "prompt is the training prefix"
            answer = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
            assert decode_answer(tokenizer, answer) == reference
            meta = batch["meta"][row]
            assert meta["key"] == batch["keys"][row] and set(meta["labels"]) == set(CHEXPERT_LABELS)
            if batch["tasks"][row] == "vqa":
                assert meta["topic"] == "presence" and meta["answer"] == "yes"
    again = list(module.val_dataloader())
    assert [b["tasks"] for b in again] == [b["tasks"] for b in batches], "validation draws the same dialogues"


def test_partner_view_choice():
    study = [{"dicom_id": "a", "view": "LATERAL"}, {"dicom_id": "b", "view": "AP"}, {"dicom_id": "c", "view": "PA"}]
    assert partner_key({"dicom_id": "b", "view": "AP", "study_images": study}) == "a"
    assert partner_key({"dicom_id": "a", "view": "LATERAL", "study_images": study}) == "c"
    assert partner_key({"dicom_id": "c", "view": "OTHER", "study_images": study}) is None
    assert partner_key({"dicom_id": "c", "view": "PA", "study_images": study[1:]}) is None


def test_multi_view_puts_the_frontal_image_first(shard_dir, tokenizer_dir):
    from dm_shards import grey_level

    module = _chat(shard_dir, tokenizer_dir, multi_view=True, task_weights={"report": 1.0},
                   image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0))
    batch = _first(module.val_dataloader())
    for row, key in enumerate(batch["keys"]):
        index = int(key.split("-")[1])
        frontal, lateral = (index, index + 1) if index % 2 == 0 else (index - 1, index)
        centres = batch["pixel_values"][row, :, 0, 6:10, 6:10].mean(dim=(1, 2))
        expected = torch.tensor([grey_level(frontal), grey_level(lateral)]) / 255
        assert torch.allclose(centres, expected, atol=0.05), key
