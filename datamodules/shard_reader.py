"""Random access to the samples of WebDataset shards: a sample is the run of consecutive tar members sharing a
key (`<key>.jpg`, `<key>.txt`, ...), read by (shard, offset) through an index of member offsets built from the
tar headers on first use. Decoding a member is guarded here (`decode_member`): a damaged member is a counted
skip (`SkipSample`), any other error is a bug and raises.
"""

from __future__ import annotations

import json
import tarfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datamodules.manifest import Manifest

# What a damaged sample raises while its bytes are decoded (PIL: OSError incl. UnidentifiedImageError and truncated
# data, SyntaxError for some broken headers, ValueError; UTF-8: UnicodeDecodeError). Only decoding is guarded:
# a bug in an example builder (TypeError, KeyError, ...) must raise, not become a counted skip.
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError)


class ShardMismatchError(RuntimeError):
    """A shard disagrees with its manifest (sample count); never skipped: the split must be re-prepared."""


class SkipSample(Exception):
    """Raised by an example builder for a sample that cannot be used; `reason` becomes a metric name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def split_key(member_name: str) -> tuple[str, str]:
    """WebDataset naming: the key is the path up to the first dot of the file name, the rest the extension."""
    directory, _, base = member_name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), ext


def _plain_headers(handle: Any) -> list[tuple[str, int, int]] | None:
    """Regular-file members of a plain ustar/GNU tar as (name, data offset, size), reading headers only.

    Five times cheaper than `tarfile`'s generic member objects, which dominate indexing. Returns None
    on anything unusual (long-name or pax records, base-256 sizes, a bad checksum) so the caller falls
    back to `tarfile`.
    """
    members: list[tuple[str, int, int]] = []
    offset = 0
    while True:
        handle.seek(offset)
        header = handle.read(512)
        if len(header) < 512 or header.count(0) == 512:
            return members
        checksum_field = header[148:156].split(b"\0", 1)[0].strip()
        size_field = header[124:136]
        if not checksum_field or size_field[0] & 0x80:
            return None
        if int(checksum_field, 8) != sum(header[:148]) + 256 + sum(header[156:]):
            return None
        size = int(size_field.split(b"\0", 1)[0].strip() or b"0", 8)
        kind = header[156:157]
        if kind in (b"0", b"\0"):
            name = header[:100].split(b"\0", 1)[0].decode("utf-8")
            if header[257:262] == b"ustar" and header[345] != 0:
                name = header[345:500].split(b"\0", 1)[0].decode("utf-8") + "/" + name
            members.append((name, offset + 512, size))
        elif kind != b"5":  # directories are ignored; long names, pax headers, links: let tarfile decide
            return None
        offset += 512 + (size + 511) // 512 * 512


def tar_members(path: Path) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of every regular file in the tar at `path`, in archive order."""
    with open(path, "rb") as handle:
        members = _plain_headers(handle)
    if members is not None:
        return members
    with tarfile.open(path, "r:") as tar:
        return [(info.name, info.offset_data, info.size) for info in tar if info.isfile()]


@dataclass
class RawSample:
    """One sample's members as bytes, with where it came from (for error messages and seeds)."""

    key: str
    members: dict[str, bytes]
    shard: str
    shard_index: int
    offset: int
    lookup: Callable[[str], RawSample | None] | None = field(default=None, repr=False)

    def member(self, ext: str) -> bytes:
        if ext not in self.members:
            raise SkipSample(f"missing-{ext}", f"{self.shard}: sample {self.key} has no .{ext} member")
        return self.members[ext]

    def text(self, ext: str) -> str:
        try:
            return self.member(ext).decode("utf-8")
        except UnicodeDecodeError as error:
            raise SkipSample(f"bad-{ext}", f"{self.shard}: sample {self.key}: .{ext} is not UTF-8 ({error})") from error

    def json(self, ext: str) -> Any:
        try:
            return json.loads(self.member(ext))
        except ValueError as error:
            raise SkipSample(f"bad-{ext}", f"{self.shard}: sample {self.key}: {error}") from error


class ShardReader:
    """Random access to samples by (shard index, offset), keeping a few shard indexes and files open."""

    def __init__(self, manifest: Manifest, *, max_open: int = 16) -> None:
        self.manifest = manifest
        self.max_open = max_open
        self._indexes: OrderedDict[int, list[tuple[str, list[tuple[str, int, int]]]]] = OrderedDict()
        self._files: OrderedDict[int, Any] = OrderedDict()

    def shard_path(self, shard_index: int) -> Path:
        """The local file of a shard: the shard itself, or the cached copy of a remote one."""
        if self.manifest.cache is not None:
            return self.manifest.cache.fetch(self.manifest, shard_index)
        if self.manifest.remote:
            raise ValueError(
                f"{self.manifest.where}: reading samples out of order (multi-view pairing) needs local copies of "
                "remote shards: set cache_dir"
            )
        return self.manifest.path(shard_index)

    def index(self, shard_index: int) -> list[tuple[str, list[tuple[str, int, int]]]]:
        """[(key, [(ext, data offset, size), ...]), ...] in tar order, checked against the manifest count."""
        if shard_index in self._indexes:
            self._indexes.move_to_end(shard_index)
            return self._indexes[shard_index]
        path = self.shard_path(shard_index)
        samples: list[tuple[str, list[tuple[str, int, int]]]] = []
        for name, offset_data, size in tar_members(path):
            key, ext = split_key(name)
            if not samples or samples[-1][0] != key:
                samples.append((key, []))
            samples[-1][1].append((ext, offset_data, size))
        expected = self.manifest.shards[shard_index].num_samples
        if len(samples) != expected:
            raise ShardMismatchError(
                f"{path} holds {len(samples)} samples but its manifest says {expected}: the shard changed after "
                "the manifest was written; re-run prepare"
            )
        self._indexes[shard_index] = samples
        if len(self._indexes) > self.max_open:
            self._indexes.popitem(last=False)
        return samples

    def _file(self, shard_index: int) -> Any:
        if shard_index in self._files:
            self._files.move_to_end(shard_index)
            return self._files[shard_index]
        handle = open(self.shard_path(shard_index), "rb")  # noqa: SIM115 - kept open across reads, closed in close()
        self._files[shard_index] = handle
        if len(self._files) > self.max_open:
            self._files.popitem(last=False)[1].close()
        return handle

    def read(self, shard_index: int, offset: int) -> RawSample:
        key, members = self.index(shard_index)[offset]
        handle = self._file(shard_index)
        data = {}
        for ext, start, size in members:
            handle.seek(start)
            data[ext] = handle.read(size)
        return RawSample(key, data, self.manifest.shards[shard_index].name, shard_index, offset)

    def key_locations(self) -> dict[str, tuple[int, int]]:
        """key -> (shard index, offset) over the whole split (reads every tar header once)."""
        from tqdm.auto import tqdm

        locations: dict[str, tuple[int, int]] = {}
        for shard_index in tqdm(
            range(len(self.manifest.shards)),
            desc=f"indexing {self.manifest.split} keys",
            disable=len(self.manifest.shards) < 20,
        ):
            for offset, (key, _) in enumerate(self.index(shard_index)):
                locations[key] = (shard_index, offset)
        return locations

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def __getstate__(self) -> dict[str, Any]:
        # Workers get a fresh reader: open files and caches do not travel.
        return {"manifest": self.manifest, "max_open": self.max_open}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["manifest"], max_open=state["max_open"])


def decode_member(decode: Callable[[bytes], Any], data: bytes) -> Any:
    """`decode(data)`, with a damaged member's decoding error turned into a `SkipSample` named after its type.

    The skip reason is `decode-error-<ErrorType>` (e.g. `decode-error-UnidentifiedImageError`); the sample is then
    counted and logged by the stream. Anything else `decode` raises is a bug and propagates.
    """
    try:
        return decode(data)
    except DECODE_ERRORS as error:
        raise SkipSample(f"decode-error-{type(error).__name__}", str(error)) from error
