"""Train the classifiers and CXR-SD for a few steps under 2-process DDP (`strategy="ddp"`, gloo), then
export every checkpoint with `lit-medxchat export` and load the results with each library's `from_pretrained`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lit_medxchat.inference.export import main as export_main
from lit_medxchat.models.classifiers import load_classifier
from lit_medxchat.models.control_branch import TextControlNet
from lit_medxchat.models.diffusion import CXRDiffusion

STEPS = 3
DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Dataset

    from lit_medxchat.core.constants import VIEW_SENTENCES
    from lit_medxchat.models.classifiers import FindingsClassifier, ViewClassifier
    from lit_medxchat.models.classifiers import tiny_findings_kwargs, tiny_view_kwargs
    from lit_medxchat.models.diffusion import CXRDiffusion, tiny_diffusion_kwargs

    out, steps = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)


    class Samples(Dataset):
        def __init__(self, kind):
            self.kind = kind

        def __len__(self):
            return 4 * steps  # 2 ranks x batch 2 x steps

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            image = torch.rand(1, 32, 32, generator=g).expand(3, -1, -1)
            labels = torch.randint(0, 2, (14,), generator=g).float()
            if self.kind == "diffusion":
                view = ["PA", "AP", "LATERAL"][i % 3]
                text = f"{VIEW_SENTENCES[view]} findings: small left pleural effusion."
                return {"pixel_values": image * 2 - 1, "text": text, "labels": labels, "view": i % 3, "keys": f"k{i}"}
            return {"pixel_values": (image - 0.5) / 0.5, "view": i % 4, "labels": labels,
                    "label_mask": torch.ones(14), "keys": f"k{i}"}


    models = {
        "view": (ViewClassifier(**tiny_view_kwargs(32)), "classifier"),
        "findings": (FindingsClassifier(**tiny_findings_kwargs(32)), "classifier"),
        "diffusion": (CXRDiffusion(**tiny_diffusion_kwargs(32), ema={"decay": 0.5}), "diffusion"),
    }
    for name, (model, kind) in models.items():
        trainer = L.Trainer(accelerator="cpu", strategy="ddp", devices=2, max_steps=steps, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=out)
        trainer.fit(model, DataLoader(Samples(kind), batch_size=2))
        trainer.save_checkpoint(out / f"{name}.ckpt")
        params = {n: p.detach().double().sum().item() for n, p in model.named_parameters() if p.requires_grad}
        report = {"global_step": trainer.global_step, "world_size": trainer.world_size, "params": params}
        (out / f"{name}.rank{trainer.global_rank}.json").write_text(json.dumps(report))
    torch.distributed.destroy_process_group()
    """
)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    script = out / "train_ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # torchrun starts both ranks at once (Lightning would start rank 1 only once rank 0 reached fit).
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(
        [*command, str(script), str(out), str(STEPS)], cwd=out, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.mark.parametrize("name", ["view", "findings", "diffusion"])
def test_ddp_trains_every_module_in_sync(ddp_run, name):
    reports = [json.loads((ddp_run / f"{name}.rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(r["global_step"] == STEPS and r["world_size"] == 2 for r in reports)
    assert reports[0]["params"] == reports[1]["params"]  # gradients were all-reduced
    checkpoint = torch.load(ddp_run / f"{name}.ckpt", weights_only=False)
    assert checkpoint["global_step"] == STEPS and checkpoint["optimizer_states"]
    assert set(checkpoint["state_dict"]) == set(reports[0]["params"]) | {
        k for k in checkpoint["state_dict"] if "running_" in k or "num_batches_tracked" in k
    }


@pytest.mark.parametrize("name", ["view", "findings"])
def test_classifier_export_loads_with_transformers(ddp_run, tmp_path, name):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    assert export_main(["--ckpt", str(ddp_run / f"{name}.ckpt"), "--out", str(tmp_path)]) == 0
    trained = load_classifier(ddp_run / f"{name}.ckpt")
    hf_model = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    images = torch.rand(2, 1, 40, 40)
    pixel_values = trained.preprocess(images)
    with torch.no_grad():
        kwargs = {"interpolate_pos_encoding": False} if name == "view" else {}
        assert torch.allclose(
            hf_model(pixel_values=pixel_values, **kwargs).logits, trained.logits(pixel_values), atol=1e-5
        )
    assert hf_model.config.id2label[0] == ("PA" if name == "view" else "Atelectasis")
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert list(processor.image_mean) == list(trained.image_mean)
    assert torch.allclose(load_classifier(tmp_path).predict_proba(images), trained.predict_proba(images), atol=1e-5)


def test_diffusion_export_loads_with_diffusers(ddp_run, tmp_path):
    from diffusers import ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTokenizer

    ckpt = ddp_run / "diffusion.ckpt"
    assert export_main(["--ckpt", str(ckpt), "--out", str(tmp_path), "--include-base"]) == 0
    trained = CXRDiffusion.load_from_checkpoint(ckpt).eval()

    controlnet, info = ControlNetModel.from_pretrained(tmp_path / "controlnet", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    # Export writes the EMA weights (ema_decay was set): they differ from the live ones.
    with trained.ema_weights():
        ema_state = {k: v.clone() for k, v in trained.control.controlnet.state_dict().items()}
    exported = controlnet.state_dict()
    assert all(torch.equal(value, exported[key]) for key, value in ema_state.items())
    assert not all(torch.equal(v, trained.control.controlnet.state_dict()[k]) for k, v in ema_state.items())

    branch = TextControlNet.from_pretrained(tmp_path).eval()
    latents = torch.randn(2, 4, 16, 16)
    t = torch.tensor([5, 900])
    states, mask = trained.encode_text(
        ["PA view of the chest was obtained.", "Lateral view of the chest was obtained."]
    )
    with torch.no_grad(), trained.ema_weights():
        expected_down, expected_mid = trained.control(latents, t, states, mask)
        down, mid = branch(latents, t, states, mask)
    assert torch.allclose(mid, expected_mid) and all(
        torch.allclose(a, b) for a, b in zip(down, expected_down, strict=True)
    )

    unet = UNet2DConditionModel.from_pretrained(tmp_path, subfolder="unet")
    assert all(torch.equal(v, trained.unet.state_dict()[k]) for k, v in unet.state_dict().items())
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "tokenizer")
    text = "AP view of the chest was obtained. findings: mild pulmonary edema."
    assert tokenizer(text)["input_ids"] == trained.tokenizer(text)["input_ids"]
    notes = json.loads((tmp_path / "lit_medxchat.json").read_text())
    assert notes["module_class"] == "CXRDiffusion" and notes["ema"] is True


def test_export_refuses_what_it_cannot_read(tmp_path, ddp_run):
    with pytest.raises(FileNotFoundError, match="no such file"):
        export_main(["--ckpt", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "o")])
    with pytest.raises(IsADirectoryError, match="ZeRO"):
        export_main(["--ckpt", str(tmp_path), "--out", str(tmp_path / "o")])
    foreign = torch.load(ddp_run / "view.ckpt", weights_only=False)
    foreign["module_class"] = "somewhere.Else"
    torch.save(foreign, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="somewhere.Else"):
        export_main(["--ckpt", str(tmp_path / "foreign.ckpt"), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="--include-base"):
        export_main(["--ckpt", str(ddp_run / "view.ckpt"), "--out", str(tmp_path / "o"), "--include-base"])
    tampered = torch.load(ddp_run / "diffusion.ckpt", weights_only=False)
    tampered["state_dict"].pop(next(iter(tampered["state_dict"])))
    torch.save(tampered, tmp_path / "tampered.ckpt")
    with pytest.raises(RuntimeError, match="missing trainable keys"):
        export_main(["--ckpt", str(tmp_path / "tampered.ckpt"), "--out", str(tmp_path / "o")])


def test_llm_lora_checkpoint_exports_through_the_same_command(tmp_path):
    """`export` picks MedXChatLoRA from the checkpoint and writes a peft adapter + merged model."""
    from peft import PeftConfig

    from lit_medxchat.core.tokenizer import train_tokenizer
    from lit_medxchat.models.checkpoint_io import filter_state_dict, trainable_keys
    from lit_medxchat.models.llm_lora import MedXChatLoRA
    from lit_medxchat.models.medxchat_options import tiny_options

    texts = ["PA view of the chest was obtained. findings: small left pleural effusion."] * 20
    train_tokenizer(texts, vocab_size=300, out_dir=tmp_path / "tokenizer")
    model = MedXChatLoRA(str(tmp_path / "tokenizer"), **tiny_options())
    with torch.no_grad():  # make the LoRA weights non-trivial so the round trip means something
        for name, param in model.named_parameters():
            if param.requires_grad and "lora_B" in name:
                param.normal_(0, 0.02)
    checkpoint = {
        "state_dict": filter_state_dict(model.state_dict(), trainable_keys(model)),
        "hyper_parameters": dict(model.hparams),
        "module_class": f"{MedXChatLoRA.__module__}.MedXChatLoRA",
    }
    torch.save(checkpoint, tmp_path / "llm.ckpt")
    assert export_main(["--ckpt", str(tmp_path / "llm.ckpt"), "--out", str(tmp_path / "out")]) == 0
    assert PeftConfig.from_pretrained(tmp_path / "out" / "lora").r == model.lora_options.r
    assert (tmp_path / "out" / "merged" / "config.json").is_file()
