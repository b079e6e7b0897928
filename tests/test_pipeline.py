"""MedXChatPipeline and `lit-medxchat chat`: a tiny chat model trained for a few steps answers a
report request from an image file and turns a text-to-CXR request into a drawn image; chat and export
run without Lightning and refuse checkpoints that pickle objects or name a class that is not ours."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import lightning
import lightning.pytorch as pl
import pytest
import torch

from lit_medxchat.core.constants import XRAY_END, XRAY_START
from lit_medxchat.core.conversation import IGNORE_INDEX, SYSTEM_PROMPT, encode_conversation, encode_prompt
from lit_medxchat.core.tokenizer import train_tokenizer
from lit_medxchat.core.xray_prompts import extract_xray_prompts
from lit_medxchat.inference.chat import main as chat_main
from lit_medxchat.inference.pipeline import MedXChatPipeline, preprocess_images
from lit_medxchat.models.llm_lora import MedXChatLoRA
from lit_medxchat.models.medxchat_options import OptimOptions, tiny_options

T = 4
DRAW = "Draw a PA chest X-ray."
DRAWN_PROMPT = "PA view of the chest was obtained."
REPORT = "findings: small left pleural effusion."
DIALOGUES = [
    (0, [{"role": "user", "content": DRAW},
         {"role": "assistant", "content": f"{XRAY_START} {DRAWN_PROMPT} {XRAY_END}"}]),
    (1, [{"role": "user", "content": "Write the report."}, {"role": "assistant", "content": REPORT}]),
]


def _batch(tokenizer) -> dict:
    encoded = [encode_conversation(tokenizer, d, num_images=n, num_image_tokens=T, max_length=256)
               for n, d in DIALOGUES]
    length, pad = max(len(e.input_ids) for e in encoded), tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([e.input_ids + [pad] * (length - len(e.input_ids)) for e in encoded]),
        "attention_mask": torch.tensor([[1] * len(e.input_ids) + [0] * (length - len(e.input_ids)) for e in encoded]),
        "labels": torch.tensor([e.labels + [IGNORE_INDEX] * (length - len(e.labels)) for e in encoded]),
        "pixel_values": torch.randn(2, 1, 3, 64, 64, generator=torch.Generator().manual_seed(0)),
        "image_mask": torch.tensor([[False], [True]]),
    }


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    """A run folder as `lit-medxchat fit` leaves it: checkpoints/ and tokenizer/."""
    root = tmp_path_factory.mktemp("chat-run")
    train_tokenizer([SYSTEM_PROMPT, DRAW, DRAWN_PROMPT, REPORT, "Human: AI: Write the report."] * 10, 1000,
                    root / "tokenizer-source")
    options = tiny_options(T)
    options["optim"] = OptimOptions(lr=2e-2)
    options["generation"].max_new_tokens = 24
    torch.manual_seed(0)
    model = MedXChatLoRA(str(root / "tokenizer-source"), **options)
    loader = torch.utils.data.DataLoader([_batch(model.tokenizer)] * 40, batch_size=None)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, enable_checkpointing=False)
    trainer.fit(model, loader)
    trainer.save_checkpoint(root / "checkpoints" / "epoch=0-step=40.ckpt")
    return root


class FakeCXR:
    """Stands in for CXRDiffusion: records prompts, returns a deterministic ramp image per prompt."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], int, float, int]] = []

    def generate(self, prompts, num_inference_steps=20, guidance_scale=3.0, seed=0):
        self.calls.append((list(prompts), num_inference_steps, guidance_scale, seed))
        ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(len(prompts), 3, 16, 16)
        return ramp.clone()


def test_text_to_cxr_request_draws_the_enclosed_prompt(chat_run, tmp_path):
    from PIL import Image

    fake = FakeCXR()
    pipeline = MedXChatPipeline.from_run_dirs(chat_run, num_inference_steps=3, seed=7)
    pipeline.diffusion = fake
    response = pipeline(DRAW)
    assert response.answer == f"{XRAY_START} {DRAWN_PROMPT} {XRAY_END}"
    assert fake.calls == [([DRAWN_PROMPT], 3, 3.0, 7)]
    (path,) = response.save_images(tmp_path)
    with Image.open(path) as image:
        assert image.size == (16, 16) and image.getpixel((15, 0)) == (255, 255, 255)
    assert response.warnings == []


def test_report_request_with_an_image_file_matches_the_model(chat_run, tmp_path):
    from PIL import Image

    image_path = tmp_path / "cxr.png"
    Image.fromarray((torch.rand(80, 70, generator=torch.Generator().manual_seed(3)) * 255).byte().numpy()).save(
        image_path
    )
    pipeline = MedXChatPipeline.from_run_dirs(chat_run)
    response = pipeline("Write the report.", images=[image_path])
    assert XRAY_START not in response.answer and response.images == []
    # Same as the model's own batched generation on the same prompt and pixels.
    model = pipeline.model
    prompt = torch.tensor([encode_prompt(model.tokenizer, [{"role": "user", "content": "Write the report."}],
                                         num_images=1, num_image_tokens=T, max_length=1024)])
    tower = model.vision_tower
    pixels = preprocess_images([image_path], tower.image_size, tower.image_mean, tower.image_std)[None]
    assert model.generate(prompt, torch.ones_like(prompt), pixels, torch.ones(1, 1, dtype=torch.bool)) == [
        response.answer
    ]
    # A frontal + lateral pair: both images go in (2 x num_image_tokens <image> tokens).
    assert isinstance(pipeline("Write the report.", images=[image_path, Image.open(image_path)]).answer, str)


def test_preprocessing_letterboxes_replicates_grey_and_normalises():
    from PIL import Image

    white = Image.new("RGB", (32, 16), (255, 255, 255))  # wide: black bands above and below
    pixels = preprocess_images([white], 8, (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    assert pixels.shape == (1, 3, 8, 8)
    assert torch.allclose(pixels[0, :, 4, 4], torch.tensor([1.0, 3.0, 1.0]))  # white, per-channel normalised
    assert torch.allclose(pixels[0, :, 0, 4], torch.tensor([-1.0, -1.0, 0.0]))  # black letterbox band
    with pytest.raises(FileNotFoundError, match="no-such.png"):
        preprocess_images(["no-such.png"], 8, (0.5,) * 3, (0.5,) * 3)


def test_xray_prompt_extraction():
    assert extract_xray_prompts(f"Sure. {XRAY_START} PA view. {XRAY_END} and {XRAY_START}Lateral.{XRAY_END}") == (
        ["PA view.", "Lateral."],
        [],
    )
    prompts, warnings = extract_xray_prompts(f"{XRAY_START} AP view, cut off")
    assert prompts == ["AP view, cut off"] and "unterminated" in warnings[0]
    assert extract_xray_prompts(f"{XRAY_START} {XRAY_END}")[0] == []


def test_chat_cli_draws_with_a_real_cxr_sd_run(chat_run, tmp_path, capsys):
    from lit_medxchat.models.diffusion import CXRDiffusion, tiny_diffusion_kwargs

    diffusion = CXRDiffusion(**tiny_diffusion_kwargs(32))
    checkpoint = {"state_dict": diffusion.state_dict(), "hyper_parameters": dict(diffusion.hparams),
                  "pytorch-lightning_version": lightning.__version__}
    diffusion.on_save_checkpoint(checkpoint)
    (tmp_path / "sd" / "checkpoints").mkdir(parents=True)
    torch.save(checkpoint, tmp_path / "sd" / "checkpoints" / "last.ckpt")

    code = chat_main(["--run-dir", str(chat_run), "--sd-run-dir", str(tmp_path / "sd"), "--out", str(tmp_path / "out"),
                      "--steps", "2", "--device", "cpu", DRAW])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0] == f"{XRAY_START} {DRAWN_PROMPT} {XRAY_END}"
    from PIL import Image

    (png,) = (tmp_path / "out").glob("*.png")
    assert f"image: {png}" in out
    with Image.open(png) as image:
        assert image.size == (32, 32)


def test_chat_cli_without_sd_run_warns_and_bad_arguments_exit_2(chat_run, tmp_path, capsys):
    assert chat_main(["--run-dir", str(chat_run), "--out", str(tmp_path), DRAW]) == 0
    captured = capsys.readouterr()
    assert "not drawn" in captured.err and not list(tmp_path.glob("*.png"))
    assert chat_main(["--run-dir", str(chat_run), "--image", str(tmp_path / "missing.jpg"), "hi"]) == 2
    assert chat_main(["--run-dir", str(tmp_path / "nothing"), "hi"]) == 2
    assert "has no tokenizer" in capsys.readouterr().err


LIGHTNING_FREE_SCRIPT = """
import json, sys
from pathlib import Path
{body}
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & {{"lightning", "pytorch_lightning", "lightning_fabric"}})
print(json.dumps({{"result": result, "lightning": loaded}}))
"""


def _run_without_lightning(body: str, *args: str) -> dict:
    """Run `body` (which sets `result`) in a fresh interpreter; returns its result and the Lightning modules loaded."""
    script = LIGHTNING_FREE_SCRIPT.format(body=body)
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pipeline_answers_without_importing_lightning(chat_run):
    body = (
        "from lit_medxchat.inference.pipeline import MedXChatPipeline\n"
        "result = MedXChatPipeline.from_run_dirs(sys.argv[1])(sys.argv[2]).answer\n"
    )
    out = _run_without_lightning(body, str(chat_run), DRAW)
    assert out == {"result": f"{XRAY_START} {DRAWN_PROMPT} {XRAY_END}", "lightning": []}


def test_export_without_importing_lightning(chat_run, tmp_path):
    body = (
        "from lit_medxchat.inference.export import export_checkpoint\n"
        "result = [str(p) for p in export_checkpoint(sys.argv[1], sys.argv[2])]\n"
    )
    checkpoint = chat_run / "checkpoints" / "epoch=0-step=40.ckpt"
    out = _run_without_lightning(body, str(checkpoint), str(tmp_path / "out"))
    assert out["lightning"] == []
    assert [Path(p).name for p in out["result"]] == ["lora", "base", "merged", "vision"]
    assert (tmp_path / "out" / "merged" / "config.json").is_file()


def _tampered_run(chat_run, tmp_path, change) -> Path:
    """A copy of `chat_run` whose checkpoint was changed by `change(checkpoint)` and re-saved."""
    run = tmp_path / "run"
    shutil.copytree(chat_run / "tokenizer", run / "tokenizer")
    checkpoint = torch.load(chat_run / "checkpoints" / "epoch=0-step=40.ckpt", weights_only=True)
    change(checkpoint)
    (run / "checkpoints").mkdir()
    torch.save(checkpoint, run / "checkpoints" / "last.ckpt")
    return run


def test_checkpoints_pickling_objects_are_refused_naming_the_object(chat_run, tmp_path, capsys):
    from fractions import Fraction

    from lit_medxchat.core.checkpoint_files import UnsafeCheckpointError
    from lit_medxchat.inference.export import main as export_main

    run = _tampered_run(chat_run, tmp_path, lambda c: c["hyper_parameters"].update(note=Fraction(1, 3)))
    with pytest.raises(UnsafeCheckpointError, match="pickled fractions.Fraction"):
        MedXChatPipeline.from_run_dirs(run)
    assert chat_main(["--run-dir", str(run), "--out", str(tmp_path / "out"), DRAW]) == 2
    assert "pickled fractions.Fraction" in capsys.readouterr().err
    with pytest.raises(UnsafeCheckpointError, match="pickled fractions.Fraction"):
        export_main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "export")])


def test_checkpoints_naming_a_foreign_class_are_refused_without_importing_it(chat_run, tmp_path, capsys):
    from lit_medxchat.inference.export import main as export_main
    from lit_medxchat.inference.pipeline import CHAT_MODELS, load_module
    from lit_medxchat.models.registry import UnknownModelError

    run = _tampered_run(chat_run, tmp_path, lambda c: c.update(module_class="not_ours_at_all.Payload"))
    with pytest.raises(UnknownModelError, match="'not_ours_at_all.Payload'.*not a lit-medxchat model"):
        MedXChatPipeline.from_run_dirs(run)
    assert chat_main(["--run-dir", str(run), "--out", str(tmp_path / "out"), DRAW]) == 2
    assert "not_ours_at_all.Payload" in capsys.readouterr().err
    with pytest.raises(UnknownModelError, match="not_ours_at_all.Payload"):
        export_main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "export")])
    assert "not_ours_at_all" not in sys.modules
    # One of our models, in the wrong role: a chat run whose checkpoint says CXR-SD wrote it.
    other = _tampered_run(chat_run, tmp_path / "other",
                          lambda c: c.update(module_class="lit_medxchat.models.diffusion.CXRDiffusion"))
    with pytest.raises(UnknownModelError, match="holds a CXRDiffusion, not one of \\['MedXChatLoRA'\\]"):
        load_module(other / "checkpoints" / "last.ckpt", expected=CHAT_MODELS)
