"""Fixtures of the DataModule tests: a tiny byte-level BPE tokenizer and tiny shard sets per data contract §2."""

from __future__ import annotations

from pathlib import Path

import pytest
from dm_shards import write_split

TOKENIZER_TEXTS = [
    "PA view of the chest was obtained. findings: there is a small right pleural effusion.",
    "impression: no acute cardiopulmonary process. Is there a pneumothorax? no.",
    "Human: please write the report for this chest X-ray. AI: lateral view of the chest.",
] * 4


def build_tiny_tokenizer(out_dir: Path | None = None):
    """A ~300-token byte-level BPE tokenizer holding the project's special tokens, trained in milliseconds."""
    from lit_medxchat.core.tokenizer import train_tokenizer

    return train_tokenizer(TOKENIZER_TEXTS, vocab_size=300, out_dir=out_dir)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    build_tiny_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory) -> Path:
    """train: 37 samples in shards of 10/10/10/7 (uneven on purpose); validate: 7; test: 5."""
    root = tmp_path_factory.mktemp("shards")
    write_split(root, "train", [10, 10, 10, 7], image_size=64)
    write_split(root, "validate", [4, 3], image_size=64, start=100)
    write_split(root, "test", [5], image_size=64, start=200)
    return root
