"""A batch stream over the shards a manifest lists, for one rank, split by worker, with bad samples counted.

The shards are WebDataset tars (data contract §2); a sample is the run of consecutive members sharing a
key (`<key>.jpg`, `<key>.txt`, ...). We read them with `tarfile` by random access (an index of member
offsets per shard, built from the tar headers on first use) rather than as one sequential pipe, because
it makes three things simple and exact: reading any (shard, offset) the epoch plan names, resuming at any
batch without replaying the stream, and splitting one rank's batches among workers.

Each worker builds whole batches (decode, augment, collate) and yields `(batch, counts)` where `counts`
holds the samples dropped from that batch by reason (and other per-sample events); the resumable loader
strips and sums them.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from datamodules.epoch_plan import rank_batches, worker_batch_indices
from datamodules.remote import ShardLocation, is_remote, local_path, read_bytes

log = logging.getLogger(__name__)

# Exceptions a decoder raises on broken data (PIL: OSError/SyntaxError; json: ValueError; missing keys:
# KeyError). Anything else is a bug and must surface.
# What a damaged sample raises while its bytes are decoded (PIL: OSError incl. UnidentifiedImageError and truncated
# data, SyntaxError for some broken headers, ValueError; UTF-8: UnicodeDecodeError). Only decoding is guarded:
# a bug in an example builder (TypeError, KeyError, ...) must raise, not become a counted skip.
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError)
# Per-batch counts travel with the batch as {name: count}: "skipped/<reason>" for dropped samples, and
# any name an example builder lists under EVENTS_KEY for kept samples worth counting (e.g. "truncated").
SKIPPED_PREFIX = "skipped/"
EVENTS_KEY = "_events"
MAX_SKIP_WARNINGS = 20  # per worker and epoch; later skips are still counted, and logged at DEBUG level


class ShardMismatchError(RuntimeError):
    """A shard disagrees with its manifest (sample count); never skipped: the split must be re-prepared."""


class SkipSample(Exception):
    """Raised by an example builder for a sample that cannot be used; `reason` becomes a metric name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


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


def batch_tensor(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised tensor for a batch; inside a loader worker it lives in shared memory already.

    A batch built in a worker is moved to shared memory when it is sent to the main process; allocating
    it there in the first place (as torch's default collate does) saves one copy of every batch.
    """
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = 1
    for size in shape:
        numel *= size
    storage = torch.UntypedStorage._new_shared(numel * torch.empty((), dtype=dtype).element_size())
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def stack_batch(tensors: list[torch.Tensor]) -> torch.Tensor:
    """`torch.stack` into a `batch_tensor` (shared memory in a worker)."""
    return torch.stack(tensors, out=batch_tensor((len(tensors), *tensors[0].shape), tensors[0].dtype))


def iter_samples(data_dir: str | Path, split: str, *, retries: int = 3) -> Iterator[RawSample]:
    """Every sample of a split once, in shard order: for tools and evaluation (training reads by epoch plan).

    `data_dir` may be a URL location (`datamodules.remote`): its shards are then streamed front to back.
    """
    manifest = load_manifest(data_dir, split, retries=retries)
    if manifest.remote:
        from datamodules.sequential_reader import shard_samples

        for shard_index in range(len(manifest.shards)):
            yield from shard_samples(manifest, shard_index)
        return
    reader = ShardReader(manifest)
    try:
        for shard_index, shard in enumerate(manifest.shards):
            for offset in range(shard.num_samples):
                yield reader.read(shard_index, offset)
    finally:
        reader.close()


ExampleFn = Callable[[RawSample, np.random.Generator], dict[str, Any]]
CollateFn = Callable[[list[dict[str, Any]]], dict[str, Any]]


class ShardBatchStream(IterableDataset):
    """Batches of one rank for one epoch, produced by the DataLoader's workers (or in-process).

    `make_example(sample, rng)` turns a `RawSample` into one example (or raises `SkipSample` / a decode
    error: the sample is skipped, logged and counted); `collate(examples)` makes the batch. `rng` is seeded
    by (seed, epoch, shard, offset), so augmentation and dialogue choice are identical after a resume and
    for any number of workers. Evaluation streams (`shuffle=False`) use epoch 0 for these seeds so every
    validation pass sees the same examples.

    `set_epoch`, `start_batch` and `set_rank` are set by the loader/DataModule in the main process before
    the workers start (non-persistent workers get a fresh copy each epoch).
    """

    def __init__(
        self,
        manifest: Manifest,
        *,
        batch_size: int,
        make_example: ExampleFn,
        collate: CollateFn,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        shuffle_window: int = 1024,
        key_locations: dict[str, tuple[int, int]] | None = None,
        lanes: int = 1,
    ) -> None:
        super().__init__()
        self.manifest = manifest
        self.lanes = lanes
        self.batch_size = batch_size
        self.make_example = make_example
        self.collate = collate
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.shuffle_window = shuffle_window
        self.key_locations = key_locations
        self.rank, self.world_size = 0, 1
        self.epoch = 0
        self.start_batch = 0
        self._skips_this_pass = 0  # per worker and epoch, to cap the warnings

    def set_rank(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def plan(self, epoch: int | None = None) -> list[np.ndarray]:
        """This rank's batches for `epoch` (default: the current one) as (shard index, offset) rows."""
        return rank_batches(
            self.manifest.shard_sizes,
            rank=self.rank,
            world_size=self.world_size,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=self.epoch if epoch is None else epoch,
            shuffle=self.shuffle,
            drop_last=self.drop_last,
            shuffle_window=self.shuffle_window,
            lanes=self.lanes,
        )

    @property
    def sequential(self) -> bool:
        """Remote shards without a local cache are read front to back (`SequentialShardReader`)."""
        return self.manifest.remote and self.manifest.cache is None

    def _reader(self, batches: list[np.ndarray], indices: range) -> Any:
        """A reader of this pass's samples: random access for folders and cached copies, else sequential."""
        if not self.sequential:
            return ShardReader(self.manifest)
        from datamodules.sequential_reader import SequentialShardReader

        needed = [(index % self.lanes, int(s), int(o)) for index in indices for s, o in batches[index]]
        return SequentialShardReader(self.manifest, needed, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle)

    def __len__(self) -> int:
        """Batches per epoch on this rank; the same on every rank for training streams.

        Exact for any `num_workers` (the workers split these batches), which is why Lightning's warning that
        an IterableDataset's `__len__` may be inaccurate is silenced (`lit_medxchat.core.quiet`).
        """
        return len(self.plan())

    def _example(
        self, reader: ShardReader, shard_index: int, offset: int, skipped: Counter, worker_id: int
    ) -> dict[str, Any] | None:
        rng_epoch = self.epoch if self.shuffle else 0
        rng = np.random.default_rng([self.seed, rng_epoch, shard_index, offset])

        def lookup(key: str) -> RawSample | None:
            if not self.key_locations or key not in self.key_locations:
                return None
            return reader.read(*self.key_locations[key])

        # Reading is outside the try: a missing or truncated shard, or one that disagrees with the manifest,
        # is fatal (every later sample would fail too); only decoding one sample's members may be skipped.
        sample = reader.read(shard_index, offset)
        sample.lookup = lookup
        try:
            example = self.make_example(sample, rng)
            skipped.update(example.pop(EVENTS_KEY, ()))
            return example
        except SkipSample as error:  # raised where a member is missing or fails to decode (`decode_member`)
            reason, detail = error.reason, error.detail
        skipped[SKIPPED_PREFIX + reason] += 1
        self._skips_this_pass += 1
        where = f"{self.manifest.shards[shard_index].name}: sample {offset} ({sample.key})"
        level = logging.WARNING if self._skips_this_pass <= MAX_SKIP_WARNINGS else logging.DEBUG
        log.log(level, "%s skipped, %s: %s (rank %d worker %d: %d skipped this epoch%s)", where, reason, detail,
                self.rank, worker_id, self._skips_this_pass,
                "; further skips are logged at DEBUG" if self._skips_this_pass == MAX_SKIP_WARNINGS else "")
        return None

    def __iter__(self) -> Iterator[tuple[dict[str, Any], dict[str, int]]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batches = self.plan()
        indices = worker_batch_indices(len(batches), start=self.start_batch, worker=worker, num_workers=num_workers)
        # A reader per iteration: file handles must never be shared with forked workers (shared offsets).
        reader = self._reader(batches, indices)
        self._skips_this_pass = 0
        last_good: dict[str, Any] | None = None
        try:
            for index in indices:
                skipped: Counter = Counter()
                examples = [self._example(reader, int(s), int(o), skipped, worker) for s, o in batches[index]]
                examples = [example for example in examples if example is not None]
                if examples:
                    last_good = self.collate(examples)
                    yield last_good, dict(skipped)
                elif last_good is not None:
                    # Keep the step count identical on every rank: repeat this worker's previous batch.
                    skipped[SKIPPED_PREFIX + "batch-repeated"] += 1
                    log.warning(
                        "every sample of batch %d on rank %d was skipped; repeating the previous batch",
                        index,
                        self.rank,
                    )
                    yield last_good, dict(skipped)
                else:
                    raise RuntimeError(
                        f"every sample of batch {index} (rank {self.rank}, worker {worker}) of split "
                        f"{self.manifest.split!r} was skipped ({dict(skipped)}) and there is no earlier batch to "
                        f"repeat; see the warnings above (fix the options or re-run prepare on "
                        f"{self.manifest.where})"
                    )
        finally:
            reader.close()


def decode_member(decode: Callable[[bytes], Any], data: bytes) -> Any:
    """`decode(data)`, with a damaged member's decoding error turned into a `SkipSample` named after its type.

    The skip reason is `decode-error-<ErrorType>` (e.g. `decode-error-UnidentifiedImageError`); the sample is then
    counted and logged by the stream. Anything else `decode` raises is a bug and propagates.
    """
    try:
        return decode(data)
    except DECODE_ERRORS as error:
        raise SkipSample(f"decode-error-{type(error).__name__}", str(error)) from error
