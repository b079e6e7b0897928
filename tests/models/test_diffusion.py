"""CXR-SD at tiny scale: the ControlNet contract (zero at init, text changes it after training), what
trains, what stays frozen, sampling, validation outputs, checkpoints and config errors."""

from __future__ import annotations

import copy
from dataclasses import is_dataclass, replace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_SENTENCES
from lit_medxchat.models.checkpoint_io import CheckpointMismatchError
from lit_medxchat.models.diffusion import CXRDiffusion, tiny_diffusion_kwargs
from lit_medxchat.models.text_to_cxr import SDBaseOptions
from tests.models.cpu_trainer import cpu_trainer

TEXTS = [
    f"{VIEW_SENTENCES['PA']} findings: small left pleural effusion. impression: effusion.",
    f"{VIEW_SENTENCES['LATERAL']} findings: the lungs are clear. impression: no acute process.",
    f"{VIEW_SENTENCES['AP']} findings: mild pulmonary edema. impression: edema.",
    f"{VIEW_SENTENCES['PA']} findings: right lower lobe consolidation. impression: pneumonia.",
]
# Pinned for the tiny config: a change here means the trainable part changed (review it).
TINY_TRAINABLE_PARAMETERS = 129_584


def diffusion_batch(size: int = 32, n: int = 4, seed: int = 0) -> dict:
    """A diffusion batch per docs/data-contracts.md §3: grey CXR-like images in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    grey = torch.rand(n, 1, size, size, generator=generator)
    return {
        "pixel_values": grey.expand(-1, 3, -1, -1) * 2 - 1,
        "text": [TEXTS[i % len(TEXTS)] for i in range(n)],
        "labels": torch.randint(0, 2, (n, len(CHEXPERT_LABELS)), generator=generator).float(),
        "view": torch.tensor([i % 3 for i in range(n)]),
        "keys": [f"k{i}" for i in range(n)],
    }


class RepeatBatch(Dataset):
    """The same samples every epoch, collated by the default collate into a diffusion batch."""

    def __init__(self, batch: dict, length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        i = index % len(self.batch["text"])
        return {key: value[i] for key, value in self.batch.items()}


def loader(batch: dict, batches: int = 1) -> DataLoader:
    n = len(batch["text"])
    return DataLoader(RepeatBatch(batch, n * batches), batch_size=n, shuffle=False)


def tiny_kwargs(**changes) -> dict:
    """The tiny arguments with `changes`: a dict for an option group changes those of its fields."""
    kwargs = tiny_diffusion_kwargs()
    for key, value in changes.items():
        current = kwargs.get(key)
        kwargs[key] = replace(current, **value) if isinstance(value, dict) and is_dataclass(current) else value
    return kwargs


def make_model(**changes) -> CXRDiffusion:
    return CXRDiffusion(**tiny_kwargs(**changes))


def fixed_eval_loss(model: CXRDiffusion, batch: dict) -> float:
    with torch.no_grad():
        return sum(model.diffusion_loss(batch, torch.Generator().manual_seed(s)).item() for s in range(4)) / 4


def unet_alone(model: CXRDiffusion, latents, t, states) -> torch.Tensor:
    return model.unet(latents, t, encoder_hidden_states=states, return_dict=False)[0]


@pytest.fixture(scope="module")
def model() -> CXRDiffusion:
    return make_model()


def test_at_init_output_equals_frozen_sd_exactly(model):
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 700])
    states, mask = model.encode_text(TEXTS[:2])
    with torch.no_grad():
        ours = model.predict_noise(latents, t, states, mask)
        down, mid = model.control(latents, t, states, mask)
        frozen = unet_alone(model, latents, t, states)
    assert torch.equal(ours, frozen)
    assert all(torch.count_nonzero(r) == 0 for r in [*down, mid])


def test_randomised_zero_convs_make_the_text_change_the_residuals(model):
    model = copy.deepcopy(model)
    branch = model.control
    with torch.no_grad():
        for conv in [*branch.controlnet.controlnet_down_blocks, branch.controlnet.controlnet_mid_block]:
            conv.weight.normal_(0, 0.1)
        branch.text_to_hint.zero_conv.weight.normal_(0, 0.1)
    latents = torch.randn(1, 4, 16, 16).expand(2, -1, -1, -1)
    t = torch.tensor([500, 500])
    states, mask = model.encode_text(TEXTS[:2])
    with torch.no_grad():
        _, mid = branch(latents, t, states, mask)
        ours = model.predict_noise(latents, t, states, mask)
        frozen = unet_alone(model, latents, t, states)
    assert not torch.allclose(mid[0], mid[1]), "two reports gave the same control residual"
    assert not torch.allclose(ours, frozen)


def test_only_the_control_branch_gets_gradients_and_count_is_pinned(model):
    model.zero_grad(set_to_none=True)
    model.diffusion_loss(diffusion_batch()).backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable
    assert all(name.startswith("control.") for name in trainable)
    assert {n for n, _ in model.control.named_parameters()} == {n.removeprefix("control.") for n in trainable}
    for frozen in (model.vae, model.unet, model.text_encoder):
        assert all(not p.requires_grad and p.grad is None for p in frozen.parameters())
    # Independent count: the UNet encoder copied + zero 1x1 convs + the text-to-hint module.
    unet = model.unet
    copied = sum(
        p.numel() for m in (unet.conv_in, unet.time_embedding, unet.down_blocks, unet.mid_block) for p in m.parameters()
    )
    residual_channels = [16, 16, 16, 32, 32]  # conv_in, block 0 (layer, downsample), block 1, mid
    zero_convs = sum(c * c + c for c in residual_channels)
    hd, text_dim, grid, c0 = 16, 32, 16 * 16, 16
    hint = grid * hd + (text_dim * hd + hd) + (4 * hd * hd + 4 * hd) + 2 * hd + (9 * hd * hd + hd) + (hd * c0 + c0)
    assert model.num_trainable_parameters == copied + zero_convs + hint == TINY_TRAINABLE_PARAMETERS
    model.zero_grad(set_to_none=True)


class ModeRecorder(L.Callback):
    def __init__(self) -> None:
        self.modes: list[tuple[bool, bool, bool, bool]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.modes.append(
            (module.vae.training, module.unet.training, module.text_encoder.training, module.control.training)
        )


def test_fit_lowers_loss_keeps_frozen_parts_in_eval_and_makes_text_matter():
    torch.manual_seed(0)
    model = make_model(training={"cfg_dropout_prob": 0.0})
    batch = diffusion_batch()
    frozen_before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    before = fixed_eval_loss(model, batch)
    recorder = ModeRecorder()
    cpu_trainer(max_steps=25, callbacks=[recorder]).fit(model, loader(batch, 25))
    model.eval()
    after = fixed_eval_loss(model, batch)
    assert after < 0.95 * before, f"loss did not decrease: {before:.4f} -> {after:.4f}"
    assert recorder.modes and all(m == (False, False, False, True) for m in recorder.modes)
    assert all(torch.equal(v, model.unet.state_dict()[k]) for k, v in frozen_before.items())
    # The trained branch now depends on the report.
    latents = torch.randn(1, 4, 16, 16).expand(2, -1, -1, -1)
    states, mask = model.encode_text(TEXTS[:2])
    with torch.no_grad():
        _, mid = model.control(latents, torch.tensor([300, 300]), states, mask)
    assert mid.abs().sum() > 0 and not torch.allclose(mid[0], mid[1])


def test_generate_is_seeded_in_range_and_both_samplers_work(model):
    images = model.generate(TEXTS[:2], num_inference_steps=3, guidance_scale=3.0, seed=7)
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, model.generate(TEXTS[:2], num_inference_steps=3, guidance_scale=3.0, seed=7))
    assert not torch.equal(images, model.generate(TEXTS[:2], num_inference_steps=3, guidance_scale=3.0, seed=8))
    no_cfg = model.generate(TEXTS[:1], num_inference_steps=2, guidance_scale=1.0)
    assert no_cfg.shape == (1, 3, 32, 32)
    dpm = make_model(sampling={"sampler": "dpm-solver"}).generate(TEXTS[:1], num_inference_steps=3)
    assert dpm.shape == (1, 3, 32, 32) and torch.isfinite(dpm).all()


class OutputRecorder(L.Callback):
    def __init__(self) -> None:
        self.outputs: list = []

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.outputs.append(outputs)


def test_validation_returns_images_for_the_metric_callbacks(model):
    assert model.hparams.sampling["val_generate_batches"] == 1
    recorder = OutputRecorder()
    batch = diffusion_batch(n=2)
    metrics = cpu_trainer(callbacks=[recorder]).validate(model, loader(batch, 2), verbose=False)
    assert metrics[0]["val/loss"] > 0
    first, second = recorder.outputs
    assert second is None  # only the first `val_generate_batches` batches generate
    assert set(first) == {"generated", "real", "labels", "view", "prompts"}
    assert first["generated"].shape == first["real"].shape == (2, 3, 32, 32)
    assert 0 <= first["real"].min() and first["real"].max() <= 1
    assert torch.allclose(first["real"], (batch["pixel_values"] + 1) / 2)
    assert first["labels"].shape == (2, 14) and first["view"].shape == (2,) and first["prompts"] == batch["text"]
    # Validation loss uses fixed noise: the same model scores the same twice.
    assert cpu_trainer().validate(model, loader(batch, 2), verbose=False)[0]["val/loss"] == pytest.approx(
        metrics[0]["val/loss"]
    )


def test_checkpoint_holds_only_trainable_weights_and_ema_and_loads_strictly(tmp_path):
    model = make_model(ema={"decay": 0.9}, training={"cfg_dropout_prob": 0.5})
    run = cpu_trainer(max_steps=3, default_root_dir=tmp_path)
    run.fit(model, loader(diffusion_batch(), 3))
    path = tmp_path / "last.ckpt"
    run.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # hyper-parameters are plain dicts, lists, str, numbers
    assert checkpoint["hyper_parameters"]["ema"] == {"decay": 0.9}
    assert checkpoint["hyper_parameters"]["base"]["unet_config"]["block_out_channels"] == [16, 32]
    assert set(checkpoint["state_dict"]) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(checkpoint["ema_state_dict"]) == {n.removeprefix("control.") for n in checkpoint["state_dict"]}
    assert checkpoint["module_class"].endswith("CXRDiffusion")
    # EMA lags the live weights after training, and swapping it in is undone afterwards.
    live = model.control.controlnet.controlnet_mid_block.weight.detach().clone()
    shadow = model.ema.shadow["controlnet.controlnet_mid_block.weight"]
    assert not torch.equal(live, shadow)
    with model.ema_weights():
        assert torch.equal(model.control.controlnet.controlnet_mid_block.weight, shadow)
    assert torch.equal(model.control.controlnet.controlnet_mid_block.weight, live)

    restored = CXRDiffusion.load_from_checkpoint(path)
    for name, value in checkpoint["state_dict"].items():
        assert torch.equal(restored.state_dict()[name], value)
    assert torch.equal(restored.ema.shadow["controlnet.controlnet_mid_block.weight"], shadow)

    # Resume from the trainable-only checkpoint continues the step count and the EMA.
    resumed = make_model(ema={"decay": 0.9}, training={"cfg_dropout_prob": 0.5})
    resume = cpu_trainer(max_steps=4, default_root_dir=tmp_path)
    resume.fit(resumed, loader(diffusion_batch(), 4), ckpt_path=path)
    assert resume.global_step == 4
    assert not torch.equal(resumed.ema.shadow["controlnet.controlnet_mid_block.weight"].cpu(), shadow)
    # Another frozen base (here another init_seed) loads the branch but says so.
    with pytest.warns(UserWarning, match="frozen base weights differ"):
        CXRDiffusion.load_from_checkpoint(path, init_seed=1)

    broken = dict(checkpoint["state_dict"])
    broken.pop("control.controlnet.controlnet_mid_block.weight")
    with pytest.raises(CheckpointMismatchError, match="controlnet_mid_block.weight"):
        restored.load_state_dict(broken)
    with pytest.raises(CheckpointMismatchError, match="unexpected keys: control.extra"):
        restored.load_state_dict({**checkpoint["state_dict"], "control.extra": torch.zeros(1)})


def test_long_reports_are_counted_not_silently_cut(model):
    model.truncated_texts = 0
    ids, mask = model.tokenize(["effusion " * 100, VIEW_SENTENCES["PA"]])
    assert ids.shape == mask.shape == (2, 64)
    assert model.truncated_texts == 1 and mask[0].all()
    assert ids[0, -1] == model.tokenizer.eos_token_id


def test_rebuilt_model_is_identical(model):
    """Export and resume rebuild the frozen base and tokenizer from hyper-parameters."""
    a, b = model, make_model()
    assert a.tokenizer(TEXTS)["input_ids"] == b.tokenizer(TEXTS)["input_ids"]
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


TINY_BASE = tiny_diffusion_kwargs()["base"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"base": {"unet_config": {**TINY_BASE.unet_config, "cross_attention_dim": 48}}}, "base.unet_config.cross_"),
        ({"image_size": 33}, "image_size"),
        ({"image_size": 34}, "image_size"),
        ({"sampling": {"sampler": "euler"}}, "sampling.sampler"),
        ({"base": {"text_encoder_config": {**TINY_BASE.text_encoder_config, "vocab_size": 10}}}, "vocab_size"),
        ({"base": {"unet_config": None}}, "base.unet_config"),
        (
            {"base": {"unet_config": {**TINY_BASE.unet_config, "down_block_types": ["NoSuchBlock2D"] * 2}}},
            "base.unet_config",
        ),
        ({"base": SDBaseOptions(name_or_path="/nonexistent/sd")}, "base.name_or_path"),
        ({"base": {"frozen_dtype": "float64"}}, "base.frozen_dtype"),
        ({"training": {"cfg_dropout_prob": 1.0}}, "training.cfg_dropout_prob"),
        ({"ema": {"decay": 1.0}}, "ema.decay"),
        ({"branch": {"hint_num_heads": 3}}, "branch.hint_hidden_dim"),
    ],
)
def test_bad_configs_fail_early_naming_the_field(change, field):
    with pytest.raises((ValueError, TypeError), match=field):
        make_model(**change)


def test_an_sd_folder_replaces_the_config_built_base_from_the_command_line(model, tmp_path):
    """The demo's override: one JSON value for `base` (merged into the YAML's group) names an SD folder."""
    import json

    from lit_medxchat.plan.build import parse_config

    model.export_pretrained(tmp_path / "sd", include_base=True)  # vae/, unet/, text_encoder/, tokenizer/
    base = {"name_or_path": str(tmp_path / "sd"), "vae_config": None, "unet_config": None, "text_encoder_config": None}
    config = parse_config(["--config", "tiny/diffusion", "--model.init_args.base", json.dumps(base)])
    init_args = config["model"]["init_args"]
    assert init_args["base"]["tokenizer_vocab_size"] == 800 and init_args["branch"]["hint_hidden_dim"] == 16
    rebuilt = CXRDiffusion(**init_args)
    assert rebuilt.hparams.base["name_or_path"] == str(tmp_path / "sd")
    assert all(torch.equal(v, rebuilt.unet.state_dict()[k]) for k, v in model.unet.state_dict().items())
    assert rebuilt.tokenizer(TEXTS)["input_ids"] == model.tokenizer(TEXTS)["input_ids"]


def _base_folder(model, tmp_path, prediction_type: str) -> dict:
    """The model's base exported as an SD folder whose scheduler says `prediction_type`; the `base` group naming it."""
    import json

    folder = tmp_path / "sd"
    model.export_pretrained(folder, include_base=True)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["prediction_type"] = prediction_type
    config_path.write_text(json.dumps(config))
    return {"name_or_path": str(folder), "vae_config": None, "unet_config": None, "text_encoder_config": None}


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_the_base_schedule_decides_what_the_unet_is_trained_to_predict(model, tmp_path, prediction_type):
    """The base's scheduler_config.json sets the target: the noise, or the velocity of (latents, noise)."""
    import torch.nn.functional as F

    rebuilt = make_model(base=_base_folder(model, tmp_path, prediction_type))
    schedule = rebuilt.core.noise_schedule
    assert schedule.config.prediction_type == prediction_type
    batch = diffusion_batch()
    loss = rebuilt.diffusion_loss(batch, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)  # the same draws, in diffusion_loss's order
    latents = rebuilt.core.encode_images(batch["pixel_values"], generator)
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, 1000, (latents.shape[0],), generator=generator)
    text_states, text_mask = rebuilt.core.encode_text(batch["text"])
    prediction = rebuilt.core.denoise(schedule.add_noise(latents, noise, timesteps), timesteps, text_states, text_mask)
    target = noise if prediction_type == "epsilon" else schedule.get_velocity(latents, noise, timesteps)
    assert torch.allclose(loss, F.mse_loss(prediction, target))
    sampler = rebuilt.core.generate(["PA view of the chest was obtained."], num_inference_steps=2, seed=0)
    assert sampler.shape[0] == 1  # the samplers take the same prediction type


def test_a_base_predicting_anything_else_is_refused_by_name(model, tmp_path):
    with pytest.raises(ValueError, match="prediction_type='sample' is not supported"):
        make_model(base=_base_folder(model, tmp_path, "sample"))


def test_training_noise_is_keyed_to_the_sample_not_to_the_batch_or_rank(model):
    """Per-sample `noise_seeds` (from the DataModule): a sample draws the same noise and timestep wherever it sits,
    and two samples with different seeds draw differently (ranks never repeat each other's noise)."""
    batch = {**diffusion_batch(n=4), "noise_seeds": torch.tensor([11, 12, 13, 14])}
    model.eval()
    per_sample = torch.stack([model.diffusion_loss({k: v[i:i + 1] if k != "text" else v[i:i + 1]
                                                    for k, v in batch.items()}) for i in range(4)])
    together = model.diffusion_loss(batch)
    assert torch.allclose(together, per_sample.mean(), rtol=1e-5)
    reordered = {k: (v[[1, 0, 2, 3]] if isinstance(v, torch.Tensor) else [v[i] for i in (1, 0, 2, 3)])
                 for k, v in batch.items()}
    assert torch.allclose(model.diffusion_loss(reordered), together, rtol=1e-5)
    other_seeds = {**batch, "noise_seeds": torch.tensor([21, 22, 23, 24])}
    assert not torch.allclose(model.diffusion_loss(other_seeds), together)


def _counter(calls: dict[str, int], name: str):
    def count(*_) -> None:
        calls[name] += 1

    return count


def test_gradient_checkpointing_recomputes_unet_blocks_and_changes_no_gradient():
    """Proves: `base.gradient_checkpointing` runs the frozen UNet's and the control copy's blocks again in the
    backward pass (fewer saved activations), with the same loss and the same gradient on every trainable weight."""
    batch = diffusion_batch()
    runs = {}
    for checkpointing in (False, True):
        model = make_model(base={"gradient_checkpointing": checkpointing}).train()
        calls = {"unet": 0, "control": 0}
        # the UNet's up path: the control residuals reach the loss through it (its down path needs no backward)
        model.unet.up_blocks[-1].resnets[0].register_forward_pre_hook(_counter(calls, "unet"))
        model.control.controlnet.down_blocks[0].resnets[0].register_forward_pre_hook(_counter(calls, "control"))
        loss = model.diffusion_loss(batch, torch.Generator().manual_seed(0))
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
        runs[checkpointing] = (loss.item(), grads, dict(calls))
    assert runs[False][2] == {"unet": 1, "control": 1}
    assert runs[True][2] == {"unet": 2, "control": 2}, "a checkpointed block runs again in the backward pass"
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-6)
    for name, grad in runs[False][1].items():
        assert torch.allclose(runs[True][1][name], grad, atol=1e-6, rtol=1e-5), name
