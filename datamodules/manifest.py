"""`data_dir/<split>/manifest.json`: the only source of shard names and sample counts, for folders and URLs.

Shard names are checked here, once, because they come from a file that may live on a server we do not control
and end up in paths and in `pipe:` shell commands.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datamodules.remote import ShardLocation, is_remote, local_path, read_bytes


@dataclass(frozen=True)
class ShardInfo:
    name: str
    num_samples: int
    sha256: str | None = None  # checked when a shard is streamed to its end (URLs) or cached


@dataclass(frozen=True)
class Manifest:
    """`data_dir/<split>/manifest.json`: the only source of shard names and sample counts."""

    split: str
    directory: Path
    shards: tuple[ShardInfo, ...]
    location: ShardLocation | None = None  # set when the shards are behind a URL / pipe: (read sequentially)

    @property
    def remote(self) -> bool:
        return self.location is not None

    @property
    def where(self) -> str:
        """The split's folder or URL, for messages."""
        return self.location.url(self.split) if self.location is not None else str(self.directory)

    cache: Any = None  # a `ShardCache` giving remote shards local copies (random access, epoch 2 from disk)

    def url(self, shard_index: int, attempt: int = 0) -> str:
        """Shard `shard_index`'s URL; retries (`attempt`) move along the mirrors of a brace list."""
        assert self.location is not None, "url() is for remote manifests"
        return self.location.url(self.relative(shard_index), choice=shard_index + attempt)

    def relative(self, shard_index: int) -> str:
        return f"{self.split}/{self.shards[shard_index].name}"

    def open_stream(self, shard_index: int) -> Any:
        """A retrying front-to-back byte stream over a remote shard (mirror `shard_index mod n` first)."""
        assert self.location is not None, "open_stream() is for remote manifests"
        return self.location.stream(self.relative(shard_index), choice=shard_index)

    @property
    def num_samples(self) -> int:
        return sum(shard.num_samples for shard in self.shards)

    @property
    def shard_sizes(self) -> list[int]:
        return [shard.num_samples for shard in self.shards]

    def path(self, shard_index: int) -> Path:
        return self.directory / self.shards[shard_index].name


# A shard's file name: one path component of letters, digits, '.', '_' and '-', ending in `.tar`. Names come from a
# manifest that may live on a server we do not control, and end up in paths and in `pipe:` shell commands.
SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.tar")


def _parse_shards(raw: dict[str, Any], where: str) -> tuple[ShardInfo, ...]:
    shards = []
    for index, entry in enumerate(raw.get("shards", [])):
        name = str(entry["name"])
        if not SHARD_NAME.fullmatch(name) or ".." in name:
            raise ValueError(
                f"{where}: shard entry {index} has the name {name!r}, which is not a plain shard file name "
                "(letters, digits, '.', '_', '-', ending in .tar, no '/' or '..'); refusing the manifest: "
                "re-write it with `lit-medxchat data prepare`"
            )
        shards.append(ShardInfo(name, int(entry["num_samples"]), entry.get("sha256")))
    return tuple(shards)


def _check_total(raw: dict[str, Any], manifest: Manifest, where: str) -> None:
    if "num_samples" in raw and int(raw["num_samples"]) != manifest.num_samples:
        raise ValueError(
            f"{where}: num_samples={raw['num_samples']} but its shards sum to {manifest.num_samples}; re-run prepare"
        )


def load_remote_manifest(data_dir: str, split: str, *, retries: int = 3, backoff: float = 1.0) -> Manifest:
    """`<data_dir>/<split>/manifest.json` read from the shards' own location (URL, pipe:, mirrors)."""
    from datamodules.remote import ShardReadError

    location = ShardLocation.parse(str(data_dir), retries=retries, backoff=backoff)
    where = location.url(f"{split}/manifest.json")
    try:
        raw = json.loads(read_bytes(location, f"{split}/manifest.json"))
    except ShardReadError as error:
        raise FileNotFoundError(
            f"{where} could not be read ({error}); data_dir must be the location that holds train/ validate/ "
            f"test/, each with manifest.json (split {split!r})"
        ) from error
    except ValueError as error:
        raise ValueError(f"{where} is not a JSON manifest: {error}") from error
    manifest = Manifest(split=split, directory=Path(split), shards=_parse_shards(raw, where), location=location)
    _check_total(raw, manifest, where)
    return manifest


def load_manifest(data_dir: str | Path, split: str, *, retries: int = 3, backoff: float = 1.0) -> Manifest:
    """Read and check `data_dir/split/manifest.json` (a folder, or a URL location); errors name the file and fix."""
    if is_remote(str(data_dir)):
        return load_remote_manifest(str(data_dir), split, retries=retries, backoff=backoff)
    data_dir = local_path(str(data_dir))
    directory = Path(data_dir) / split
    path = directory / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: write the shards with `lit-medxchat data prepare ... --out {data_dir}` "
            f"(split {split!r} must be one of train/validate/test)"
        )
    raw = json.loads(path.read_text())
    manifest = Manifest(split=split, directory=directory, shards=_parse_shards(raw, str(path)))
    missing = [shard.name for shard in manifest.shards if not (directory / shard.name).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} lists shards that are missing on disk: {missing[:5]}; re-run prepare")
    _check_total(raw, manifest, str(path))
    return manifest
