"""Every shipped config parses; tiny and demo configs train two steps through `lit-medxchat fit`."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_medxchat.training.cli import SHIPPED_CONFIGS, _cli_class, main, resolve_config, shipped_config_names

MODELS = ("view_classifier", "findings_classifier", "diffusion", "chat")


def test_every_scale_ships_every_model() -> None:
    names = set(shipped_config_names())
    for scale in ("tiny", "demo", "paper"):
        for model in MODELS:
            assert f"{scale}/{model}" in names


@pytest.mark.parametrize("name", shipped_config_names())
def test_shipped_config_parses(name: str) -> None:
    """Parsing checks every init argument against the class signatures (no weights are built)."""

    class ParseOnly(_cli_class()):
        def instantiate_classes(self) -> None:  # paper configs name hub ids: never download in tests
            pass

    from lightning.pytorch import LightningDataModule, LightningModule

    cli = ParseOnly(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=["--config", resolve_config(name)],
        run=False,
        auto_configure_optimizers=False,
    )
    assert cli.config["model"]["class_path"].startswith("lit_medxchat.models.")
    assert cli.config["data"]["class_path"].startswith("datamodules.")


def test_unknown_config_name_lists_the_shipped_ones() -> None:
    with pytest.raises(SystemExit, match="tiny/chat"):
        resolve_config("tiny/no-such-model")


@pytest.mark.parametrize("name", [n for n in shipped_config_names() if n.split("/")[0] in ("tiny", "demo")])
def test_config_trains_two_steps(name: str, synth_shards: Path, chat_tokenizer: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = [
        "fit",
        "--config",
        name,
        "--data.init_args.data_dir",
        str(synth_shards),
        "--trainer.default_root_dir",
        str(run),
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.val_check_interval",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--data.init_args.num_workers",
        "0",
        "--data.init_args.batch_size",
        "2",
    ]
    if name.endswith(("/chat", "/lm_base")):
        argv += [
            "--model.init_args.tokenizer",
            str(chat_tokenizer),
            "--data.init_args.tokenizer_path",
            str(chat_tokenizer),
        ]
    assert main(argv) == 0
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints, checkpoints
    assert SHIPPED_CONFIGS.is_dir()
