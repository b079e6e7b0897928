"""Shard names from a manifest never reach a shell: a name that is not a plain file name is refused, and every
path put into a `pipe:` command is one quoted word."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from datamodules.classifier import ClassifierDataModule
from datamodules.manifest import load_manifest
from datamodules.remote import ShardLocation

MALICIOUS = "shard-000000.tar; touch PWNED; echo "


def _poisoned_copy(shard_dir: Path, tmp_path: Path, name: str) -> Path:
    """A copy of the shards whose train manifest names its first shard `name` (the file exists under that name)."""
    root = tmp_path / "shards"
    shutil.copytree(shard_dir, root)
    manifest_path = root / "train" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    original = manifest["shards"][0]["name"]
    manifest["shards"][0]["name"] = name
    manifest_path.write_text(json.dumps(manifest))
    if "/" not in name:
        (root / "train" / original).rename(root / "train" / name)
    return root


@pytest.mark.parametrize("name", [MALICIOUS, "../validate/shard-000000.tar", "$(touch PWNED).tar", "a b.tar"])
def test_a_manifest_naming_a_shard_unsafely_is_refused_before_anything_runs(shard_dir, tmp_path, monkeypatch, name):
    root = _poisoned_copy(shard_dir, tmp_path, name)
    monkeypatch.chdir(tmp_path)
    for data_dir in (str(root), f"pipe:cat {root}/{{shard}}"):
        module = ClassifierDataModule(data_dir, batch_size=2, num_workers=0, image_size=32)
        with pytest.raises(ValueError, match=r"manifest.json: shard entry 0 has the name .* not a plain shard file"):
            module.setup("fit")
            next(iter(module.train_dataloader()))
        assert not (tmp_path / "PWNED").exists() and not (root / "train" / "PWNED").exists()


def test_a_pipe_command_gets_each_path_as_one_quoted_word() -> None:
    location = ShardLocation.parse("pipe:cat /data/{shard}")
    assert location.url("train/shard-000003.tar") == "pipe:cat /data/train/shard-000003.tar"  # plain names unchanged
    assert location.url("train/x.tar; touch PWNED") == "pipe:cat /data/'train/x.tar; touch PWNED'"
    http = ShardLocation.parse("http://host/shards")
    assert http.url("train/shard-000003.tar") == "http://host/shards/train/shard-000003.tar"


def test_plain_names_still_load(shard_dir) -> None:
    manifest = load_manifest(shard_dir, "train")
    assert [shard.name for shard in manifest.shards][:1] == ["shard-000000.tar"]
