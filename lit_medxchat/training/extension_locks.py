"""Stale JIT-build locks of torch extensions (DeepSpeed's ops): found and removed before DeepSpeed starts.

torch builds a C++ extension under `TORCH_EXTENSIONS_DIR/<name>/` behind a `lock` file and every other process
waits for that file to disappear, with no timeout and no check of who holds it. A job killed during a build (a
preempted cluster job, a ctrl-C, a `kill -9`) leaves the file behind, and every later job that needs the op waits
for ever without a word. A build takes seconds to a few minutes, so a lock much older than that belongs to no
live build: it is removed, with a warning naming it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)
STALE_AFTER_S = 30 * 60


def extensions_root() -> Path:
    """Where torch builds extensions: `TORCH_EXTENSIONS_DIR`, else torch's default root."""
    configured = os.environ.get("TORCH_EXTENSIONS_DIR")
    if configured:
        return Path(configured)
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root())


def remove_stale_locks(root: Path | None = None, stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete `lock` files of extension builds older than `stale_after_s`; returns those removed."""
    root = extensions_root() if root is None else Path(root)
    removed: list[Path] = []
    now = time.time()
    for lock in [*root.glob("*/lock"), *root.glob("*/*/lock")]:
        try:
            age = now - lock.stat().st_mtime
            if age < stale_after_s:
                continue
            lock.unlink()
        except OSError:  # gone meanwhile, or not ours to delete: the build will say so itself
            continue
        log.warning("removed a stale torch-extension build lock %s (%.0f min old, left by a killed process)", lock,
                    age / 60)
        removed.append(lock)
    return removed
