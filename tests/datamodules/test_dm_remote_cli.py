"""End to end: `lit-medxchat fit` trains a tiny config from shards served over HTTP (`data_dir` is the URL)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from http_shards import ShardServer


def test_lit_medxchat_fit_trains_a_tiny_config_from_http(shard_dir, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    command = [str(Path(sys.executable).with_name("lit-medxchat")), "fit", "--config", "tiny/view_classifier",
               "--data.init_args.data_dir", "", "--data.init_args.num_workers", "2",
               "--data.init_args.retries", "1", "--data.init_args.cache_dir", str(cache),
               "--trainer.default_root_dir", str(run), "--trainer.logger", "false"]
    with ShardServer(shard_dir) as server:
        command[command.index("")] = server.url
        result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    state = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert state["ranks"][0]["batches"] == 2 and state["ranks"][0]["lanes"] == 2
    assert len(list(cache.glob("*.tar"))) >= 1, "shards were cached on this node"
    assert any(name.endswith(".tar") for name, _ in server.requests)
