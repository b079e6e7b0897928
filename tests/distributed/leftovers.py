"""End what a killed run leaves behind, as a scheduler's preemption does.

SIGKILL of a training process group does not reach W&B's service process (it runs in its own
session); left alive it still holds the run open, and the resumed run is refused ("run ID is in
use") until it notices its parent died. A preempted cluster job loses its whole cgroup, service
included; the tests do the same, finding the leftovers by the WANDB_DIR their run was given.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def end_leftovers(wandb_dir: Path, timeout_s: float = 20.0) -> int:
    """SIGKILL every process whose environment has WANDB_DIR=`wandb_dir`; returns how many were found."""
    marker = f"WANDB_DIR={wandb_dir}".encode()
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    found = [pid for pid in pids if marker in _environ(pid).split(b"\0")]
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() and
                                              b"State:\tZ" not in Path(f"/proc/{pid}/status").read_bytes()
                                              for pid in found if Path(f"/proc/{pid}/status").exists()):
        time.sleep(0.1)
    return len(found)
