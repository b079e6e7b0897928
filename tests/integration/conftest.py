"""A small built-in dataset, rendered from the phantom and prepared into shards once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of 12 phantom subjects at 96 px: every split present, every model's DataModule can read them."""
    from lit_medxchat.inference.prepare_cli import main as prepare_main
    from lit_medxchat.synth.cli import main as synth_main

    root = tmp_path_factory.mktemp("synth")
    tree, shards = root / "mimic", root / "shards"
    assert (
        synth_main(
            [
                "--out",
                str(tree),
                "--num-subjects",
                "12",
                "--seed",
                "3",
                "--image-size",
                "96",
                "--phantom",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        prepare_main(
            [
                "mimic-cxr",
                "--root",
                str(tree),
                "--out",
                str(shards),
                "--image-size",
                "96",
                "--samples-per-shard",
                "8",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    return shards


@pytest.fixture(scope="session")
def chat_tokenizer(synth_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datamodules.tokenizer_cli import main as tokenizer_main

    out = tmp_path_factory.mktemp("tokenizer") / "tokenizer"
    assert tokenizer_main(["--data-dir", str(synth_shards), "--out", str(out), "--vocab-size", "600"]) == 0
    return out
