"""`TextToCXR`, the Lightning-free CXR-SD core: built from a `CXRDiffusion` checkpoint through the registry, it
draws and exports exactly what the LightningModule does with its EMA weights, checks keys strictly, and reads
checkpoints written before the option groups."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from lit_medxchat.models.checkpoint_io import CheckpointMismatchError
from lit_medxchat.models.diffusion import CXRDiffusion, tiny_diffusion_kwargs
from lit_medxchat.models.registry import load_core
from lit_medxchat.models.text_to_cxr import (
    BranchOptions,
    TextToCXR,
    as_options,
    grouped_hyper_parameters,
    tiny_text_to_cxr_options,
)
from tests.models.cpu_trainer import cpu_trainer
from tests.models.test_diffusion import TEXTS, RepeatBatch, diffusion_batch

PROMPTS = TEXTS[:2]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # bit-for-bit comparisons, also against a subprocess


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[CXRDiffusion, Path]:
    """A tiny CXR-SD trained 3 steps with EMA, and its Lightning checkpoint."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("cxr-sd")
    model = CXRDiffusion(**tiny_diffusion_kwargs(), ema={"decay": 0.5})
    batch = diffusion_batch()
    trainer = cpu_trainer(max_steps=3, default_root_dir=root)
    trainer.fit(model, DataLoader(RepeatBatch(batch, 12), batch_size=4))
    path = root / "last.ckpt"
    trainer.save_checkpoint(path)
    return CXRDiffusion.load_from_checkpoint(path).eval(), path


def test_the_core_module_imports_no_lightning() -> None:
    code = "import sys, lit_medxchat.models.text_to_cxr; assert not [m for m in sys.modules if 'lightning' in m]"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_load_core_draws_what_the_lightning_module_draws_with_ema(trained, tmp_path) -> None:
    """Through `registry.load_core` in a process without Lightning: the same pixels, bit for bit."""
    model, path = trained
    script = textwrap.dedent(
        f"""
        import sys, torch
        from lit_medxchat.models.registry import load_core
        torch.set_num_threads(1)
        core = load_core({str(path)!r})
        images = core.generate({PROMPTS!r}, num_inference_steps=3, guidance_scale=3.0, seed=7)
        torch.save({{"images": images, "training": core.training, "ema": core.holds_ema_weights}}, sys.argv[1])
        assert not [m for m in sys.modules if m.startswith("lightning")], "the core pulled in Lightning"
        """
    )
    out = tmp_path / "drawn.pt"
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, timeout=300)
    drawn = torch.load(out, weights_only=True)
    expected = model.generate(PROMPTS, num_inference_steps=3, guidance_scale=3.0, seed=7)
    assert torch.equal(drawn["images"], expected)
    assert drawn["images"].shape == (2, 3, 32, 32) and drawn["training"] is False and drawn["ema"] is True


def test_from_checkpoint_holds_the_ema_weights_frozen_base_and_eval_mode(trained) -> None:
    model, path = trained
    checkpoint = torch.load(path, weights_only=True)
    core = TextToCXR.from_checkpoint(checkpoint)
    assert not core.training and not core.control.training and not core.unet.training
    assert core.num_trainable_parameters == model.num_trainable_parameters
    with model.ema_weights():
        expected = {k: v.clone() for k, v in model.state_dict().items()}
    assert core.state_dict().keys() == expected.keys()
    assert all(torch.equal(value, expected[key]) for key, value in core.state_dict().items())
    # The live (non-EMA) weights differ, so the EMA really was swapped in.
    live = checkpoint["state_dict"]["control.controlnet.controlnet_mid_block.weight"]
    assert not torch.equal(core.control.controlnet.controlnet_mid_block.weight, live)
    assert core.hyper_parameters["ema"] == {"decay": 0.5}


def test_export_writes_the_same_files_as_the_lightning_module(trained, tmp_path) -> None:
    model, path = trained
    core = load_core(path)
    ours = core.export_pretrained(tmp_path / "core", include_base=True)
    theirs = model.export_pretrained(tmp_path / "module", include_base=True)
    assert [p.relative_to(tmp_path / "core") for p in ours] == [p.relative_to(tmp_path / "module") for p in theirs]
    for mine, other in zip(ours, theirs, strict=True):
        if mine.name != "lit_medxchat.json":
            assert mine.read_bytes() == other.read_bytes(), mine
    notes = json.loads((tmp_path / "core" / "lit_medxchat.json").read_text())
    assert notes["module_class"] == "CXRDiffusion" and notes["ema"] is True
    assert notes["hyper_parameters"]["branch"] == {"hint_hidden_dim": 16, "hint_num_heads": 2}
    assert not model.core.holds_ema_weights  # the module's live weights came back after its export


def test_checkpoints_with_flat_hyper_parameters_still_load(trained) -> None:
    """Checkpoints written before the option groups name every argument at the top level."""
    model, path = trained
    checkpoint = torch.load(path, weights_only=True)
    grouped = checkpoint["hyper_parameters"]
    training = grouped["training"]
    checkpoint["hyper_parameters"] = {
        **grouped["base"],
        **grouped["branch"],
        **grouped["sampling"],
        "learning_rate": training["lr"],
        "weight_decay": training["weight_decay"],
        "warmup_steps": training["warmup_steps"],
        "cfg_dropout_prob": training["cfg_dropout_prob"],
        "ema_decay": grouped["ema"]["decay"],
        "image_size": grouped["image_size"],
        "init_seed": grouped["init_seed"],
        "seed": grouped["seed"],
    }
    core = TextToCXR.from_checkpoint(checkpoint)
    assert core.hyper_parameters == grouped
    expected = model.generate(PROMPTS[:1], num_inference_steps=2, guidance_scale=1.0)
    assert torch.equal(core.generate(PROMPTS[:1], num_inference_steps=2, guidance_scale=1.0), expected)


def test_from_checkpoint_refuses_what_does_not_match(trained) -> None:
    _, path = trained
    checkpoint = torch.load(path, weights_only=True)
    missing = {**checkpoint, "state_dict": dict(checkpoint["state_dict"])}
    missing["state_dict"].pop("control.controlnet.controlnet_mid_block.weight")
    with pytest.raises(CheckpointMismatchError, match="missing trainable keys: control.controlnet.controlnet_mid"):
        TextToCXR.from_checkpoint(missing)
    extra = {**checkpoint, "state_dict": {**checkpoint["state_dict"], "control.extra": torch.zeros(1)}}
    with pytest.raises(CheckpointMismatchError, match="unexpected keys: control.extra"):
        TextToCXR.from_checkpoint(extra)
    with pytest.raises(CheckpointMismatchError, match="size mismatch for control.text_to_hint"):  # another width
        TextToCXR.from_checkpoint(checkpoint, branch={"hint_hidden_dim": 32})
    no_ema = {key: value for key, value in checkpoint.items() if key != "ema_state_dict"}
    with pytest.raises(ValueError, match="ema.decay"):
        TextToCXR.from_checkpoint(no_ema)
    assert not TextToCXR.from_checkpoint(no_ema, ema={"decay": None}).holds_ema_weights
    with pytest.warns(UserWarning, match="frozen base weights differ"):
        TextToCXR.from_checkpoint(checkpoint, init_seed=1)
    with pytest.raises(ValueError, match="'num_beams' is not a CXRDiffusion hyper-parameter"):
        TextToCXR.from_checkpoint(checkpoint, num_beams=3)


def test_option_groups_accept_dataclasses_dicts_and_none_and_name_unknown_fields() -> None:
    assert as_options({"hint_hidden_dim": 8}, BranchOptions, "branch") == BranchOptions(hint_hidden_dim=8)
    assert as_options(None, BranchOptions, "branch") == BranchOptions()
    with pytest.raises(ValueError, match=r"`branch` has no field\(s\) \['width'\]"):
        as_options({"width": 8}, BranchOptions, "branch")
    with pytest.raises(ValueError, match="'vision' is not one of CXRDiffusion's"):
        grouped_hyper_parameters({"vision": {}})
    grouped = grouped_hyper_parameters({"_class_path": "x", "ema_decay": 0.9}, {"sampling": {"sampler": "dpm-solver"}})
    assert grouped["ema"] == {"decay": 0.9} and grouped["sampling"]["sampler"] == "dpm-solver"
    assert grouped["image_size"] == 512 and "_class_path" not in grouped


def test_the_core_alone_generates_in_range_with_either_sampler() -> None:
    core = TextToCXR(**tiny_text_to_cxr_options()).eval()
    images = core.generate(PROMPTS, num_inference_steps=2, seed=3)
    assert images.shape == (2, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert not any(p.requires_grad for module in core.frozen_modules() for p in module.parameters())
    dpm = TextToCXR(**{**tiny_text_to_cxr_options(), "sampling": {"sampler": "dpm-solver"}})
    assert torch.isfinite(dpm.generate(PROMPTS[:1], num_inference_steps=2)).all()
