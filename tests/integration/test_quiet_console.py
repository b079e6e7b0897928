"""`lit-medxchat fit` prints its own progress, not library chatter (checked on the console of a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Text of every notice silenced or fixed so far; none may come back on a run's console.
NOISE = (
    "LightningCLI's args parameter",  # we pass the rewritten command line as `args`
    "LOAD REPORT",  # transformers' table of the classifier head a vision tower drops
    "has `__len__` defined",  # Lightning on our (exact) IterableDataset length
    "LeafSpec",  # torch's pytree deprecation raised inside Lightning
    "tensorboardX",
    "💡 Tip",  # Lightning's litlogger / litmodels adverts
    "in eval mode at the start of training",  # frozen parts are in eval mode on purpose
    "is_gradient_checkpointing",  # peft reading a deprecated transformers property
)


def _noise_in(output: str) -> list[str]:
    return [text for text in NOISE if text in output]


def test_print_config_has_no_args_warning(
    monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder, capsys: pytest.CaptureFixture[str]
) -> None:
    """The console script's exact path: `sys.argv` holds the command line and the dispatcher passes it on."""
    from lit_medxchat.cli import main

    monkeypatch.setattr(sys, "argv", ["lit-medxchat", "fit", "--config", "tiny/view_classifier", "--print_config"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    captured = capsys.readouterr()
    assert "class_path: lit_medxchat.models." in captured.out
    assert not _noise_in(captured.err + "\n".join(str(w.message) for w in recwarn))


def _exported_classifier(folder: Path, image_size: int) -> Path:
    """A findings classifier in the folder layout `export_pretrained` writes (head included)."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], num_labels=14)
    ResNetForImageClassification(config).save_pretrained(folder)
    processor = {"size": {"height": image_size, "width": image_size}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def test_tiny_chat_fit_with_a_classifier_tower_prints_no_library_noise(
    synth_shards: Path, chat_tokenizer: Path, tmp_path: Path
) -> None:
    tower = _exported_classifier(tmp_path / "tower", image_size=64)
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "lit_medxchat.cli", "fit", "--config", "tiny/chat",
        "--data.init_args.data_dir", str(synth_shards),
        "--trainer.default_root_dir", str(run),
        "--trainer.max_steps", "2",
        "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "2",
        "--model.init_args.tokenizer", str(chat_tokenizer),
        "--data.init_args.tokenizer_path", str(chat_tokenizer),
        "--model.init_args.vision.name_or_path", str(tower),
        "--model.init_args.vision.config", "{}",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not _noise_in(output), output[-4000:]
