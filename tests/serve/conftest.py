"""Runs for the web-chat tests, trained once per session, and one served page on 127.0.0.1.

- `fit_runs`: the tiny chat, CXR-SD and view-classifier configs trained two steps each through
  `lit-medxchat fit` on a small built-in dataset: real run folders (checkpoints with completion
  markers, config.yaml, tokenizer/), as a user's `fit` leaves them.
- `dialogue_run`: that chat model trained on, in addition, a few scripted conversations about one
  CXR file (`cxr_file`) until it answers them word for word, so the tests can check what the page
  shows: a report, a follow-up answered from the previous turn, and a `<Xray>` prompt to draw.
- `server`: `dialogue_run` + the CXR-SD and view-classifier runs, served on a free loopback port.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from serve_dialogues import DIALOGUES, MAX_NEW_TOKENS, free_port  # noqa: E402

# Steps and learning rate at which the tiny model answers every scripted turn word for word: 70 steps at 5e-2
# left a byte wrong from some starting weights; at 2e-2 every turn was right from 120 to 200 steps.
STEPS = 150
LEARNING_RATE = 2e-2


@dataclass(frozen=True)
class FitRuns:
    shards: Path
    chat: Path
    diffusion: Path
    view: Path


def _fit(config: str, run: Path, shards: Path, extra: list[str]) -> Path:
    from lit_medxchat.training.cli import main as fit_main

    argv = ["fit", "--config", config, "--data.init_args.data_dir", str(shards), "--trainer.default_root_dir",
            str(run), "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.val_check_interval",
            "2", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "2", *extra]
    assert fit_main(argv) == 0, argv
    return run


@pytest.fixture(scope="session")
def fit_runs(tmp_path_factory: pytest.TempPathFactory) -> FitRuns:
    import torch

    from datamodules.tokenizer_cli import main as tokenizer_main
    from lit_medxchat.inference.prepare_cli import main as prepare_main
    from lit_medxchat.synth.cli import main as synth_main

    torch.set_num_threads(1)  # session fixtures run before the per-test thread setting
    root = tmp_path_factory.mktemp("serve-runs")
    tree, shards, tokenizer = root / "mimic", root / "shards", root / "tokenizer"
    assert synth_main(["--out", str(tree), "--num-subjects", "12", "--seed", "3", "--image-size", "64",
                       "--phantom", "--no-progress"]) == 0
    assert prepare_main(["mimic-cxr", "--root", str(tree), "--out", str(shards), "--image-size", "64",
                         "--samples-per-shard", "8", "--workers", "1"]) == 0
    assert tokenizer_main(["--data-dir", str(shards), "--out", str(tokenizer), "--vocab-size", "600"]) == 0
    tokenizer_args = ["--model.init_args.tokenizer", str(tokenizer), "--data.init_args.tokenizer_path", str(tokenizer)]
    return FitRuns(
        shards=shards,
        chat=_fit("tiny/chat", root / "chat", shards, tokenizer_args),
        diffusion=_fit("tiny/diffusion", root / "diffusion", shards, []),
        view=_fit("tiny/view_classifier", root / "view", shards, []),
    )


@pytest.fixture(scope="session")
def cxr_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-bit grey PNG with a bright rib-cage-like pattern (what the scripted conversations are about)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:96, 0:80]
    pattern = 20000 + 20000 * np.sin(x / 6.0) * np.cos(y / 9.0) + 300 * y
    path = tmp_path_factory.mktemp("cxr") / "cxr.png"
    Image.fromarray(pattern.astype(np.uint16)).save(path)
    return path


def _dialogue_batch(model, pixels) -> dict:
    import torch

    from lit_medxchat.core.conversation import IGNORE_INDEX, encode_conversation

    encoded = []
    for num_images, texts in DIALOGUES:
        turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]
        encoded.append(encode_conversation(model.tokenizer, turns, num_images=num_images,
                                           num_image_tokens=model.num_image_tokens, max_length=512))
    length, pad = max(len(e.input_ids) for e in encoded), model.tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([e.input_ids + [pad] * (length - len(e.input_ids)) for e in encoded]),
        "attention_mask": torch.tensor([[1] * len(e.input_ids) + [0] * (length - len(e.input_ids)) for e in encoded]),
        "labels": torch.tensor([e.labels + [IGNORE_INDEX] * (length - len(e.labels)) for e in encoded]),
        "pixel_values": pixels[None].expand(len(DIALOGUES), 1, *pixels.shape).clone(),
        "image_mask": torch.tensor([[n > 0] for n, _ in DIALOGUES]),
    }


@pytest.fixture(scope="session")
def dialogue_run(fit_runs: FitRuns, cxr_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fit run's chat model, trained further on `DIALOGUES` about `cxr_file` (decoded as uploads are)."""
    import lightning.pytorch as pl
    import torch

    from lit_medxchat.inference.pipeline import newest_checkpoint, preprocess_images
    from lit_medxchat.models.llm_lora import MedXChatLoRA
    from lit_medxchat.models.medxchat_options import GenerationOptions, OptimOptions
    from lit_medxchat.serve.uploads import decode_upload
    from lit_medxchat.training.checkpoint_callback import CompleteCheckpoint

    root = tmp_path_factory.mktemp("dialogue-run")
    torch.manual_seed(0)
    model = MedXChatLoRA.load_from_checkpoint(newest_checkpoint(fit_runs.chat), map_location="cpu",
                                              tokenizer=str(fit_runs.chat / "tokenizer"),
                                              generation=GenerationOptions(max_new_tokens=MAX_NEW_TOKENS, num_beams=1))
    model.optim_options = OptimOptions(lr=LEARNING_RATE)
    tower = model.vision_tower
    pixels = preprocess_images([decode_upload(cxr_file).image], tower.image_size, tower.image_mean, tower.image_std)
    loader = torch.utils.data.DataLoader([_dialogue_batch(model, pixels[0])] * STEPS, batch_size=None)
    checkpoint = CompleteCheckpoint(dirpath=root / "checkpoints", save_last=True, every_n_train_steps=STEPS)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, callbacks=[checkpoint])
    trainer.fit(model, loader)
    return root


@pytest.fixture(scope="session")
def server(dialogue_run: Path, fit_runs: FitRuns) -> Iterator:
    from lit_medxchat.serve.server import resolve_runs, start_server

    runs = resolve_runs(dialogue_run, fit_runs.diffusion, fit_runs.view)
    running = start_server(runs, host="127.0.0.1", port=free_port(), device="cpu")
    try:
        yield running
    finally:
        running.close()
