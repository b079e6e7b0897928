"""`MedXChatModel`, the chat model's plain core: free of Lightning, rebuilt from a `MedXChatLoRA` checkpoint
read with `weights_only=True`, and the same model as the training wrapper (outputs, answers, keys)."""

from __future__ import annotations

import subprocess
import sys

import lightning.pytorch as pl
import pytest
import torch
from test_llm_lora import NUM_IMAGE_TOKENS, chat_batch, make_model, tokenizer_dir  # noqa: F401

from lit_medxchat.models import registry
from lit_medxchat.models.checkpoint_io import CheckpointMismatchError
from lit_medxchat.models.llm_lora import MedXChatLoRA
from lit_medxchat.models.medxchat import MedXChatModel
from lit_medxchat.models.medxchat_options import LoRAOptions, core_options, tiny_options

PLAIN = (dict, list, tuple, str, int, float, bool, type(None))


def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return isinstance(value, PLAIN)


@pytest.fixture(scope="module")
def trained(tokenizer_dir, tmp_path_factory):  # noqa: F811
    """A wrapper trained for a few steps and the checkpoint its trainer wrote."""
    root = tmp_path_factory.mktemp("core-run")
    torch.manual_seed(0)
    model = make_model(tokenizer_dir)
    batch = chat_batch(model.tokenizer)
    train = {k: batch[k] for k in ("input_ids", "attention_mask", "labels", "pixel_values", "image_mask")}
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, default_root_dir=root)
    trainer.fit(model, torch.utils.data.DataLoader([train] * 3, batch_size=None))
    trainer.save_checkpoint(root / "model.ckpt")
    return model.eval(), root / "model.ckpt"


def test_the_core_module_imports_no_lightning():
    script = ("import sys, lit_medxchat.models.medxchat; "
              "print([m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_the_core_alone_is_the_wrappers_model(tokenizer_dir):  # noqa: F811
    """Built from the same options (all but `optim`), the core holds the wrapper's very weights."""
    core = MedXChatModel(str(tokenizer_dir), **core_options(tiny_options(NUM_IMAGE_TOKENS)))
    wrapper = make_model(tokenizer_dir)
    expected = wrapper.model.state_dict()
    assert core.state_dict().keys() == expected.keys()
    assert all(torch.equal(value, expected[key]) for key, value in core.state_dict().items())
    assert core.trainable_parameter_count() == wrapper.trainable_parameter_count()
    assert not core.vision_tower.training and not core.train().vision_tower.training


def test_checkpoint_hyper_parameters_are_plain_and_read_with_weights_only(trained):
    _, path = trained
    checkpoint = torch.load(path, weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    assert _plain(hparams), hparams
    assert set(hparams) == {"tokenizer", "vision", "adapter", "llm", "lora", "generation", "optim", "init_seed"}
    assert checkpoint["module_class"] == "lit_medxchat.models.llm_lora.MedXChatLoRA"


def test_registry_loads_the_core_that_answers_like_the_wrapper(trained):
    wrapper, path = trained
    core = registry.load_core(path)
    assert type(core) is MedXChatModel and not core.training
    assert not wrapper.model.training
    expected = wrapper.model.state_dict()
    for key, value in core.state_dict().items():
        assert torch.equal(value, expected[key]), key
    batch = chat_batch(core.tokenizer)
    with torch.no_grad():
        logits = core(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["image_mask"]).logits
        torch.testing.assert_close(logits, wrapper.model(batch["input_ids"], batch["attention_mask"],
                                                          batch["pixel_values"], batch["image_mask"]).logits)
        loss = core(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["image_mask"],
                    labels=batch["labels"]).loss
        assert torch.equal(loss, wrapper(batch))
    prompts = (batch["prompt_input_ids"], batch["prompt_attention_mask"], batch["pixel_values"], batch["image_mask"])
    answers = core.generate(*prompts)
    assert answers == wrapper.generate(*prompts)
    assert any(answers), "the tiny model stopped at once: the comparison would prove nothing"


def test_from_checkpoint_takes_overrides_and_checks_keys_strictly(trained):
    _, path = trained
    checkpoint = torch.load(path, weights_only=True)
    core = MedXChatModel.from_checkpoint(checkpoint, generation={"max_new_tokens": 2, "num_beams": 1})
    assert core.generation_options.max_new_tokens == 2
    with pytest.raises(CheckpointMismatchError, match="unexpected keys.*v_proj"):
        MedXChatModel.from_checkpoint(checkpoint, lora=LoRAOptions(r=4, alpha=8, dropout=0.0,
                                                                    target_modules=["q_proj"]))
    missing = dict(checkpoint, state_dict=dict(checkpoint["state_dict"]))
    missing["state_dict"].pop(next(k for k in missing["state_dict"] if "adapter" in k))
    with pytest.raises(CheckpointMismatchError, match="missing trainable keys: adapter"):
        MedXChatModel.from_checkpoint(missing)


def test_the_wrapper_refuses_keys_that_are_not_its_own(trained):
    """A state dict keyed for the core (no `model.` prefix) is not silently re-keyed into the Lightning module: the
    strict key check names what is missing, and no weight is touched."""
    wrapper, path = trained
    checkpoint = torch.load(path, weights_only=True)
    flat = {key.removeprefix("model."): value for key, value in checkpoint["state_dict"].items()}
    assert flat.keys() != checkpoint["state_dict"].keys()
    reloaded = MedXChatLoRA(**checkpoint["hyper_parameters"])
    before = {key: value.clone() for key, value in reloaded.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="missing trainable keys: model\\."):
        reloaded.load_state_dict(flat)
    assert all(torch.equal(value, reloaded.state_dict()[key]) for key, value in before.items())
