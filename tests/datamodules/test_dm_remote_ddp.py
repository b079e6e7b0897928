"""2 DDP ranks x 2 loader workers streaming over HTTP, SIGKILLed mid-epoch and resumed: bitwise the local run.

The ranks run `dm_remote_run.py` in subprocesses (never DDP inside pytest); the HTTP server runs in this process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from dm_remote_run import CKPT_EVERY, MAX_STEPS
from http_shards import ShardServer

HERE = Path(__file__).parent
KILL_AT_STEP = 11  # epoch 1 (9 steps per epoch), after the checkpoint of step 10: resume mid-epoch


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Starts both ranks and exits with 0 only if both did: run in a new session, so that the ranks, their loader
# workers and this launcher form one process group that a SIGKILL takes down together.
LAUNCHER = """
import os, subprocess, sys
out, command = sys.argv[1], sys.argv[2:]
procs = []
for rank in range(2):
    with open(os.path.join(out, f"log-rank{rank}.txt"), "w") as log:
        procs.append(subprocess.Popen(command, env={**os.environ, "LOCAL_RANK": str(rank)}, stdout=log,
                                      stderr=subprocess.STDOUT))
sys.exit(max(abs(proc.wait()) for proc in procs))
"""


def _fit(data: str, out: Path, *extra: str) -> int:
    """Both ranks of one fit; the exit code (negative: killed by that signal)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "NODE_RANK": "0", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(HERE / "dm_remote_run.py"), data, str(out), *extra]
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(out), *command], env=env,
                                start_new_session=True)
    try:
        return launcher.wait(timeout=480)  # ~20 s on idle cores; generous for a shared, loaded machine
    finally:
        try:
            os.killpg(launcher.pid, signal.SIGKILL)  # loader workers of a killed rank may linger
        except ProcessLookupError:
            pass


def _steps(out: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (out / f"steps-rank{rank}.jsonl").read_text().splitlines()]


def test_kill9_mid_epoch_and_resume_over_http_is_bitwise_the_local_run(shard_dir, tmp_path):
    reference, run = tmp_path / "local", tmp_path / "http"
    assert _fit(str(shard_dir), reference) == 0, (reference / "log-rank0.txt").read_text()[-3000:]
    with ShardServer(shard_dir) as server:
        killed = _fit(server.url, run, "--kill-at-step", str(KILL_AT_STEP))
        assert killed == -signal.SIGKILL, (run / "log-rank0.txt").read_text()[-3000:]
        resumed = _fit(server.url, run, "--resume")
        assert resumed == 0, (run / "log-rank0.txt").read_text()[-3000:]
    last_checkpoint = KILL_AT_STEP // CKPT_EVERY * CKPT_EVERY
    for rank in (0, 1):
        expected = _steps(reference, rank)
        assert [row["step"] for row in expected] == list(range(MAX_STEPS))
        rows = _steps(run, rank)
        # rank 1 may have started step 11 before rank 0 killed the group: split where the step count restarts
        split = next(i for i in range(1, len(rows)) if rows[i]["step"] <= rows[i - 1]["step"])
        before, after = rows[:split], rows[split:]
        assert len(before) in (KILL_AT_STEP, KILL_AT_STEP + 1), f"rank {rank} before the kill"
        assert before == expected[: len(before)], f"rank {rank}: HTTP must train exactly like the local folder"
        assert [row["step"] for row in after] == list(range(last_checkpoint, MAX_STEPS)), f"rank {rank} resumed"
        assert after == expected[last_checkpoint:], f"rank {rank}: resumed keys and losses, bitwise"
    keys = [key for rank in (0, 1) for row in _steps(reference, rank)[:9] for key in row["keys"]]
    assert len(keys) == len(set(keys)) == 36, "the ranks read disjoint samples within an epoch"
