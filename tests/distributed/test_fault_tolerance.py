"""Fault tests: 2 CPU ranks killed with SIGKILL and resumed, with DDP, ZeRO-2 and ZeRO-3; two nodes; world-size change.

Each scenario runs `train_toy.py` in subprocesses (never DDP inside pytest). What each proves is in its docstring.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from leftovers import end_leftovers

from lit_medxchat.training.checkpointing import convert_zero_to_fp32
from lit_medxchat.training.completion import (
    IncompleteCheckpointError,
    WorldSizeMismatchError,
    find_last_complete_checkpoint,
    read_marker,
    verify_checkpoint,
)

pytest.importorskip("deepspeed")

SCRIPT = Path(__file__).with_name("train_toy.py")
TRAINABLE_KEYS = {"head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"}
KILL_IN_SAVE_STEP = 6  # the save of step 6 is torn: files written, no completion marker
RESUMED_FROM = "epoch=0-step=4.ckpt"  # so `last` must fall back to step 4


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    # A W&B service started by an earlier test in this process is advertised in WANDB_SERVICE; a run
    # attached to it would outlive its SIGKILL there and keep the run id "in use". Each run gets its own.
    env.pop("WANDB_SERVICE", None)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "lit-medxchat" / "torch_extensions"))
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(tmp), WANDB_CACHE_DIR=str(tmp / "wandb-cache"),
               WANDB_CONFIG_DIR=str(tmp / "wandb-config"), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return env


def _run(args: list[str], tmp: Path, *, new_session: bool = False, launcher: list[str] | None = None,
         timeout: int = 600) -> subprocess.CompletedProcess:
    command = (launcher or [sys.executable]) + [str(SCRIPT), *args]
    return subprocess.run(command, env=_env(tmp), cwd=SCRIPT.parent, capture_output=True, text=True, timeout=timeout,
                          start_new_session=new_session)


def _losses(run_dir: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (run_dir / f"losses-rank{rank}.jsonl").read_text().splitlines()]


def _kill_and_resume(tmp: Path, strategy: str, extra: list[str] = ()) -> dict[str, Path]:
    """Run until SIGKILL inside the save of step 6, resume with `last`, then train a reference from scratch."""
    run, reference = tmp / "run", tmp / "reference"
    common = ["--strategy", strategy, "--max-steps", "10", "--ckpt-every", "2", *extra]
    killed = _run(["--run-dir", str(run), "--kill-in-save-step", str(KILL_IN_SAVE_STEP), *common], tmp,
                  new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    end_leftovers(tmp)
    resumed = _run(["--run-dir", str(run), "--resume", "--reference-dir", str(reference), *common], tmp)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {"run": run, "reference": reference, "log": resumed.stderr}


def _assert_exact_resume(paths: dict[str, Path]) -> None:
    run, reference = paths["run"], paths["reference"]
    result = json.loads((run / "result.json").read_text())
    assert Path(result["ckpt_path"]).name == RESUMED_FROM, "`last` must skip the torn step-6 checkpoint"
    assert result["global_step"] == 10
    torn = run / "checkpoints" / f"epoch=0-step={KILL_IN_SAVE_STEP}.ckpt"
    assert torn.exists() and read_marker(torn) is None, "the torn checkpoint exists on disk but is never complete"
    for rank in (0, 1):
        losses = _losses(run, rank)
        expected = {row["step"]: row for row in _losses(reference, rank)}
        before_kill = [row for row in losses if row["step"] <= KILL_IN_SAVE_STEP][: KILL_IN_SAVE_STEP]
        after_resume = losses[len(losses) - 6 :]
        assert [row["step"] for row in after_resume] == [4, 5, 6, 7, 8, 9]
        for row in before_kill + after_resume:  # bitwise: same floats, same samples, in the same order
            assert row["loss"] == expected[row["step"]]["loss"], (rank, row, expected[row["step"]])
            assert row["indices"] == expected[row["step"]]["indices"], (rank, row["step"])


def _assert_only_trainable_in_shards(checkpoint: Path, tmp: Path) -> None:
    """Frozen parameters are in no shard, and the fp32 conversion yields exactly the trainable weights."""
    for shard in checkpoint.rglob("*.pt"):
        state = torch.load(shard, map_location="cpu", weights_only=False)
        names = set(state.get("module") or {})
        names |= {name for shapes in state.get("param_shapes", []) for name in shapes}
        assert not any(name.startswith("backbone.") for name in names), (shard.name, names)
    converted = torch.load(convert_zero_to_fp32(checkpoint, tmp / "fp32.ckpt"), map_location="cpu", weights_only=False)
    assert set(converted["state_dict"]) == TRAINABLE_KEYS


def test_kill9_resume_ddp_is_bitwise_exact_and_continues_the_wandb_run(tmp_path):
    """Proves: SIGKILL mid-epoch (inside a save) + `last` resumes model, AdamW, StepLR, loop counters, per-rank RNG
    (dropout) and the mid-epoch data position, so every later loss equals the uninterrupted run's bit for bit; the torn
    checkpoint is skipped; the W&B run id comes back from the checkpoint and no step is logged twice."""
    paths = _kill_and_resume(tmp_path, "ddp", ["--wandb"])
    _assert_exact_resume(paths)
    result = json.loads((paths["run"] / "result.json").read_text())
    stored = read_marker(paths["run"] / "checkpoints" / RESUMED_FROM)["extra"]["wandb"]["id"]
    assert result["wandb_id"] == stored, "resumed W&B run must be the checkpoint's run"
    reference = json.loads((paths["reference"] / "result.json").read_text())
    assert reference["wandb_id"] != stored, "a fresh run opens a new W&B run"
    assert result["wandb_skipped_rows"] >= 1, "steps logged before the kill must not be logged again"
    assert result["wandb_last_step"] >= 9
    offline_runs = list((tmp_path / "run" / "wandb" / "wandb").glob(f"offline-run-*-{stored}"))
    assert len(offline_runs) == 2, offline_runs  # killed + resumed process wrote the same run id


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_kill9_resume_zero_sharded_is_bitwise_exact(tmp_path, stage):
    """Proves the same with DeepSpeed ZeRO sharded checkpoint directories on CPU (gloo), and that the shards hold only
    trainable parameters (the frozen backbone is in none of them) and convert to one fp32 file."""
    paths = _kill_and_resume(tmp_path, stage)
    _assert_exact_resume(paths)
    newest = find_last_complete_checkpoint(paths["run"] / "checkpoints")
    assert read_marker(newest)["zero_stage"] == int(stage[-1])
    _assert_only_trainable_in_shards(newest, tmp_path)

    # Corrupt / missing shard files: a clear error naming the file, and `last` falls back to the previous one.
    checkpoints = tmp_path / "copy"
    shutil.copytree(paths["run"] / "checkpoints", checkpoints, symlinks=True)
    newest = find_last_complete_checkpoint(checkpoints)
    shard = sorted(newest.rglob("*optim_states.pt"))[-1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    shard.write_bytes(bytes(data))
    with pytest.raises(IncompleteCheckpointError, match=shard.name):
        verify_checkpoint(newest)
    previous = find_last_complete_checkpoint(checkpoints)
    assert previous != newest and read_marker(previous)["global_step"] < read_marker(newest)["global_step"]
    missing = sorted(previous.rglob("*model_states.pt"))[0]
    missing.unlink()
    with pytest.raises(IncompleteCheckpointError, match=f"{missing.name} is missing"):
        verify_checkpoint(previous)
    assert read_marker(find_last_complete_checkpoint(checkpoints))["global_step"] < read_marker(previous)["global_step"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_nodes_on_one_machine_then_resume_on_one_rank_says_how_to_convert(tmp_path):
    """Proves: two `torchrun` calls (node ranks 0 and 1 on 127.0.0.1) train ZeRO-2 together and write one complete
    checkpoint with both ranks' shards; resuming it on 1 rank fails before training with an error naming the world
    sizes and the converter; the converter turns the 2-node shards into one fp32 file."""
    run = tmp_path / "run"
    port = _free_port()
    args = ["--run-dir", str(run), "--strategy", "zero2", "--devices", "1", "--num-nodes", "2", "--max-steps", "4"]
    nodes, logs = [], [tmp_path / f"node{node_rank}.log" for node_rank in (0, 1)]
    for node_rank, log in zip((0, 1), logs, strict=True):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                    "--node-rank", str(node_rank), "--master-addr", "127.0.0.1", "--master-port", str(port)]
        # Output to files, not pipes: a pipe nobody reads while waiting on the other node fills up and blocks
        # that node mid-training, and both nodes then wait on each other.
        with log.open("w") as sink:
            nodes.append(subprocess.Popen(launcher + [str(SCRIPT), *args], env=_env(tmp_path), cwd=SCRIPT.parent,
                                          stdout=sink, stderr=subprocess.STDOUT))
    for node in nodes:
        node.wait(timeout=600)
    outputs = [log.read_text()[-3000:] for log in logs]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0] + outputs[1]
    checkpoint = find_last_complete_checkpoint(run / "checkpoints")
    marker = read_marker(checkpoint)
    assert marker["world_size"] == 2 and marker["global_step"] == 4
    assert len(list(checkpoint.rglob("*optim_states.pt"))) == 2, "one optimizer shard per node"

    with pytest.raises(WorldSizeMismatchError, match="to-fp32"):
        verify_checkpoint(checkpoint, world_size=1)
    single = _run(["--run-dir", str(run), "--strategy", "zero2", "--devices", "1", "--max-steps", "6", "--resume"],
                  tmp_path)
    assert single.returncode != 0
    assert "written by 2 ranks; this run has 1" in single.stderr and "to-fp32" in single.stderr, single.stderr[-2000:]
    _assert_only_trainable_in_shards(checkpoint, tmp_path)
