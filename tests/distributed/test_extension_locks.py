"""A JIT-build lock left by a killed process is removed before DeepSpeed starts; a live build's lock is kept."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from lit_medxchat.training.extension_locks import STALE_AFTER_S, extensions_root, remove_stale_locks


def test_stale_locks_are_removed_and_fresh_ones_kept(tmp_path: Path, caplog) -> None:
    """Proves: a `lock` older than the stale age (a killed build) goes, with a warning naming it; a lock of a build
    running now stays; other files are never touched."""
    stale = tmp_path / "py311_cpu" / "deepspeed_shm_comm" / "lock"
    fresh = tmp_path / "fused_adam" / "lock"
    other = tmp_path / "fused_adam" / "fused_adam.so"
    for path in (stale, fresh, other):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    old = time.time() - STALE_AFTER_S - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    with caplog.at_level(logging.WARNING):
        assert remove_stale_locks(tmp_path) == [stale]
    assert not stale.exists() and fresh.exists() and other.exists()
    assert str(stale) in caplog.text and "stale" in caplog.text


def test_the_root_follows_torch_extensions_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert extensions_root() == tmp_path
