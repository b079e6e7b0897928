"""The only code that writes shard tar files, and the manifest that lists them.

Shards are byte-for-byte deterministic (fixed mtime, uid/gid, owner names and mode; samples in
the order they are given; members in a fixed order), so an interrupted run that reuses its
finished shards ends with the same bytes as an uninterrupted one. A shard is written as
`shard-NNNNNN.tar.partial` and renamed only after it is complete and flushed to disk, so a
`.tar` name always means a whole shard; its sha256 is computed while writing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

# 2000-01-01T00:00:00Z: a fixed member mtime (0 upsets some archive tools).
FIXED_MTIME = 946_684_800
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
SHARD_PATTERN = re.compile(r"^shard-(\d{6})\.tar(\.partial)?$")


def shard_name(index: int) -> str:
    """`shard-000042.tar`: six digits cover 377k images even at one sample per shard."""
    return f"shard-{index:06d}.tar"


@dataclass(frozen=True)
class ShardInfo:
    """A finished shard as the manifest lists it."""

    name: str
    num_samples: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "num_samples": self.num_samples, "sha256": self.sha256}


class _HashingFile:
    """A write-only file wrapper that hashes every byte on its way to disk."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.position = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.position += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.position


class ShardWriter:
    """Write one WebDataset shard: `write(key, members)` per sample, then `close()`.

    `members` maps an extension (`"jpg"`, `"txt"`, `"json"`, `"conv.json"`) to bytes; they are
    stored as `<key>.<extension>` in the order given. Nothing is created until the first sample,
    and `close()` on a shard without samples returns None and leaves no file behind.
    """

    def __init__(self, directory: str | Path, index: int) -> None:
        self.directory = Path(directory)
        self.name = shard_name(index)
        self.path = self.directory / self.name
        self.partial_path = self.directory / (self.name + ".partial")
        self.num_samples = 0
        self._keys: set[str] = set()
        self._raw: BinaryIO | None = None
        self._hashing: _HashingFile | None = None
        self._tar: tarfile.TarFile | None = None

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._raw = open(self.partial_path, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._hashing = _HashingFile(self._raw)
        self._tar = tarfile.open(fileobj=self._hashing, mode="w", format=tarfile.GNU_FORMAT)  # type: ignore[arg-type]

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """Append one sample; keys must be unique in the shard and hold no '.' (WebDataset splits there)."""
        if "." in key or "/" in key or not key:
            raise ValueError(f"shard {self.name}: key {key!r} is empty or holds '.' or '/'; WebDataset cannot group it")
        if key in self._keys:
            raise ValueError(f"shard {self.name}: key {key!r} written twice")
        if self._tar is None:
            self._open()
        assert self._tar is not None
        for extension, data in members.items():
            info = tarfile.TarInfo(f"{key}.{extension}")
            info.size = len(data)
            info.mtime = FIXED_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self._keys.add(key)
        self.num_samples += 1

    def close(self) -> ShardInfo | None:
        """Finish the tar, flush it to disk and rename it from `.partial`; None when it holds no sample."""
        if self._tar is None:
            return None
        assert self._raw is not None and self._hashing is not None
        self._tar.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self.partial_path, self.path)
        _fsync_directory(self.directory)
        info = ShardInfo(self.name, self.num_samples, self._hashing.digest.hexdigest())
        self._tar = self._raw = self._hashing = None
        return info

    def abort(self) -> None:
        """Drop a shard being written (its `.partial` file) after an error."""
        if self._raw is not None:
            self._raw.close()
        self.partial_path.unlink(missing_ok=True)
        self._tar = self._raw = self._hashing = None


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable; some file systems refuse to open directories, which only costs durability."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # fsync on a directory is unsupported on some network file systems; the rename still happened
    finally:
        os.close(descriptor)


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=1, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def build_manifest(
    *,
    split: str,
    shards: list[ShardInfo],
    skipped: list[dict[str, str]],
    converted_by_reason: dict[str, int],
    dialogue_stats: dict[str, int],
    source: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, Any]:
    """The per-split manifest of docs/data-contracts.md §2: the only place sample counts live."""
    skipped_by_reason: dict[str, int] = {}
    for item in skipped:
        skipped_by_reason[item["reason"]] = skipped_by_reason.get(item["reason"], 0) + 1
    return {
        "split": split,
        "num_samples": sum(shard.num_samples for shard in shards),
        "shards": [shard.to_json() for shard in shards],
        "skipped": skipped,
        "skipped_by_reason": dict(sorted(skipped_by_reason.items())),
        "converted_by_reason": dict(sorted(converted_by_reason.items())),
        "dialogue_stats": dict(sorted(dialogue_stats.items())),
        "source": source,
        "options": options,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "version": MANIFEST_VERSION,
    }


def read_manifest(split_dir: str | Path) -> dict[str, Any]:
    """Load `<split_dir>/manifest.json`, naming the folder and the fix when it is absent."""
    path = Path(split_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `lit-medxchat data prepare ...` to (re)build {split_dir}")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
