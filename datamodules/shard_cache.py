"""A node-local cache of remote shards, so that later epochs on a node read from disk instead of downloading again.

A shard is downloaded whole (with the location's retries) into `<name>.<pid>.<random>.partial` next to its
final name, checked against the manifest's sha256, and only then renamed: a `.tar` in the cache is always a
complete, verified shard, and a half-downloaded file is never used (its odd name is never looked up; stale
ones are deleted). Several workers or ranks may fetch the same shard at once: each writes its own partial
file and the renames are atomic, so they agree. When the `.tar` files exceed `max_bytes`, the least
recently used ones are deleted (use refreshes a file's mtime); a file deleted while another worker reads it
stays readable on POSIX until closed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
STALE_PARTIAL_SECONDS = 3600.0


class ShardCache:
    """Local copies of remote shards under `directory`, at most `max_bytes` of them (least recently used go)."""

    def __init__(self, directory: str | Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"cache size must be positive, got {max_bytes} bytes")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.downloads = 0  # shards fetched by this process (for logs and tests)

    def path_for(self, manifest: Any, shard_index: int) -> Path:
        """The cache file of a shard: named by location, split, shard name and sha256, so new data never hits."""
        info = manifest.shards[shard_index]
        identity = f"{manifest.location.spec}|{manifest.relative(shard_index)}|{info.sha256 or ''}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:20]
        return self.directory / f"{digest}-{info.name}"

    def fetch(self, manifest: Any, shard_index: int) -> Path:
        """The local path of a verified copy of the shard, downloading it first when it is not cached."""
        final = self.path_for(manifest, shard_index)
        if final.is_file():
            os.utime(final)
            return final
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f"{final.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
        stream = manifest.open_stream(shard_index)
        try:
            with open(partial, "wb") as handle:
                while chunk := stream.read(1 << 20):
                    handle.write(chunk)
            expected = manifest.shards[shard_index].sha256
            if expected and stream.sha256 != expected:
                from datamodules.shard_reader import ShardMismatchError

                raise ShardMismatchError(f"{stream.url} has sha256 {stream.sha256} but its manifest says {expected}: "
                                         "the shard changed after the manifest was written; re-run prepare")
            os.replace(partial, final)
        finally:
            stream.close()
            partial.unlink(missing_ok=True)
        self.downloads += 1
        self.evict(keep=final)
        return final

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Delete least recently used shards beyond `max_bytes` (never `keep`) and stale partial files."""
        now = time.time()
        entries = []
        for path in self.directory.iterdir():
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed by another worker meanwhile
                continue
            if path.name.endswith(".partial"):
                if now - stat.st_mtime > STALE_PARTIAL_SECONDS:
                    path.unlink(missing_ok=True)
            elif path.suffix == ".tar":
                entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        removed = []
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed.append(path)
        if removed:
            log.debug("shard cache %s: evicted %d shard(s) to stay under %d bytes", self.directory, len(removed),
                      self.max_bytes)
        return removed
