"""Records -> WebDataset shards: plan shards, decode images in parallel, write, resume, summarise.

A run is planned before anything is decoded: each split's records are sorted by key and cut
into shards of `samples_per_shard`, and each shard gets a fingerprint (options, records, image
file sizes and mtimes). A finished shard leaves a state file (`<split>/.state/shard-N.tar.json`:
fingerprint, sha256, sample count, skipped items, conversions). A rerun reuses every shard
whose state matches its fingerprint and whose tar still has the recorded sha256, and builds the
rest; because tars are deterministic, the result equals an uninterrupted run. Manifests are
written last, so a split without a manifest is a split still being prepared.

Sources come from `datamodules.sources.registry` (`prepare_source`); a view classifier, when
one is wanted, arrives already loaded (`FileViewPredictor`): this layer never imports models.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import sys
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm.auto import tqdm

from datamodules.records import SPLITS, CXRRecord, SkippedItem, SourceScan
from datamodules.shards import (
    MANIFEST_NAME,
    SHARD_PATTERN,
    ShardInfo,
    ShardWriter,
    build_manifest,
    file_sha256,
    shard_name,
    write_json_atomic,
)
from datamodules.sources.images import JPEG_QUALITY, ImageError, encode_cxr_image
from datamodules.sources.registry import DataSource, get_source
from datamodules.view_fill import FileViewPredictor, describe, fill_views

# Bump when the bytes a shard holds change for the same inputs: finished shards are then rebuilt.
PIPELINE_VERSION = 1
STATE_DIR = ".state"


@dataclass(frozen=True)
class PrepareOptions:
    """How to prepare shards.

    Args:
        image_size: longest side of the stored JPEG in pixels (the paper's models resize again).
        samples_per_shard: images per tar (~60 KB each at 512 px: 1000 -> ~60 MB shards).
        workers: decoding processes; 1 decodes in this process.
        seed: seeds the rule-based dialogue builder (phrasing choices).
        llm_endpoint: OpenAI-compatible chat URL for dialogues; None uses the rules only.
        llm_model: model name sent to `llm_endpoint`.
        llm_timeout_s: seconds to wait for one LLM reply before falling back to the rules.
        progress: show tqdm progress bars.
    """

    image_size: int = 512
    samples_per_shard: int = 1000
    workers: int = 1
    seed: int = 0
    llm_endpoint: str | None = None
    llm_model: str = "gpt-4o"
    llm_timeout_s: float = 60.0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"image_size={self.image_size}: give at least 8 pixels")
        if self.samples_per_shard < 1:
            raise ValueError(f"samples_per_shard={self.samples_per_shard}: give at least 1")
        if self.workers < 1:
            raise ValueError(f"workers={self.workers}: give at least 1")

    def content_options(self) -> dict[str, Any]:
        """The options that shape shard bytes (recorded in manifests and fingerprints; not `workers`)."""
        from lit_medxchat import __version__ as package_version

        return {
            "image_size": self.image_size,
            "jpeg_quality": JPEG_QUALITY,
            "samples_per_shard": self.samples_per_shard,
            "seed": self.seed,
            "llm_endpoint": self.llm_endpoint,
            "llm_model": self.llm_model if self.llm_endpoint else None,
            "pipeline_version": PIPELINE_VERSION,
            # the labeler and dialogue rules ship with the package: a new release rebuilds the shards
            "package_version": package_version,
        }


@dataclass(frozen=True)
class ShardPlan:
    split: str
    index: int
    records: tuple[CXRRecord, ...]
    fingerprint: str


@dataclass
class SampleResult:
    """What a worker returns for one record: the members, or why it was skipped."""

    key: str
    members: dict[str, bytes] | None
    skipped: SkippedItem | None
    conversions: tuple[str, ...] = ()
    dialogue_stats: dict[str, int] = field(default_factory=dict)


@dataclass
class PrepareResult:
    """Per-split manifests as written, and how many shards were reused vs written in this run."""

    manifests: dict[str, dict[str, Any]]
    reused_shards: dict[str, int]
    written_shards: dict[str, int]


# ---------------------------------------------------------------- planning


def _image_stat(path: str) -> list[int]:
    try:
        stat = os.stat(path)
    except OSError:
        return [-1, -1]
    return [stat.st_size, stat.st_mtime_ns]


def plan_shards(records: Iterable[CXRRecord], options: PrepareOptions) -> dict[str, list[ShardPlan]]:
    """Sort each split's records by key and cut them into fingerprinted shards."""
    by_split: dict[str, list[CXRRecord]] = {split: [] for split in SPLITS}
    for record in records:
        by_split[record.split].append(record)
    header = json.dumps(options.content_options(), sort_keys=True)
    plans: dict[str, list[ShardPlan]] = {}
    for split, split_records in by_split.items():
        split_records.sort(key=lambda record: record.key)
        keys = [record.key for record in split_records]
        if len(set(keys)) != len(keys):
            duplicates = sorted({key for key in keys if keys.count(key) > 1})[:5]
            raise ValueError(f"split {split}: duplicated keys {duplicates}; the source adapter must skip duplicates")
        plans[split] = []
        size = options.samples_per_shard
        for index, start in enumerate(range(0, len(split_records), size)):
            chunk = tuple(split_records[start : start + size])
            digest = hashlib.sha256(header.encode())
            for record in chunk:
                digest.update(record.fingerprint().encode())
                digest.update(json.dumps(_image_stat(record.image_path)).encode())
            plans[split].append(ShardPlan(split, index, chunk, digest.hexdigest()))
    return plans


def _state_path(split_dir: Path, index: int) -> Path:
    return split_dir / STATE_DIR / (shard_name(index) + ".json")


def _reusable_state(split_dir: Path, plan: ShardPlan) -> dict[str, Any] | None:
    """The state of a finished shard matching `plan`, after checking the tar's sha256; else None."""
    path = _state_path(split_dir, plan.index)
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # a state file cut short is rewritten when the shard is rebuilt
    if state.get("fingerprint") != plan.fingerprint:
        return None
    shard = state.get("shard")
    if shard is None:
        return state  # every sample of this shard was skipped; nothing on disk to check
    tar_path = split_dir / shard["name"]
    if not tar_path.is_file() or file_sha256(tar_path) != shard["sha256"]:
        return None
    return state


def _clean_split_dir(split_dir: Path, plans: list[ShardPlan]) -> None:
    """Drop the manifest (the split is no longer complete), partial tars, and shards beyond the plan."""
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / MANIFEST_NAME).unlink(missing_ok=True)
    for path in split_dir.iterdir():
        match = SHARD_PATTERN.match(path.name)
        if match and (match.group(2) or int(match.group(1)) >= len(plans)):
            path.unlink()
    state_dir = split_dir / STATE_DIR
    if state_dir.is_dir():
        for path in state_dir.iterdir():
            match = SHARD_PATTERN.match(path.name.removesuffix(".json"))
            if match is None or int(match.group(1)) >= len(plans):
                path.unlink()


# ---------------------------------------------------------------- workers

_BUILDER: Any = None
_IMAGE_SIZE = 512
_LOCK_HANDLE: TextIO | None = None  # the output lock of the running prepare (see `_exclusive`)


def _init_worker(options: PrepareOptions) -> None:
    """Build this process's dialogue builder once (it may hold an HTTP client for the LLM).

    A forked worker also drops its copy of the output lock, so that workers outliving a killed
    main process do not keep the next run out.
    """
    global _BUILDER, _IMAGE_SIZE, _LOCK_HANDLE
    if _LOCK_HANDLE is not None and multiprocessing.parent_process() is not None:
        _LOCK_HANDLE.close()
        _LOCK_HANDLE = None
    from lit_medxchat.dialogues import DialogueBuilder

    _BUILDER = DialogueBuilder(
        seed=options.seed,
        llm_endpoint=options.llm_endpoint,
        llm_model=options.llm_model,
        timeout_s=options.llm_timeout_s,
    )
    _IMAGE_SIZE = options.image_size


def build_sample(record: CXRRecord) -> SampleResult:
    """Decode one image and build its four members; image problems become a skip, never an exception."""
    try:
        image = encode_cxr_image(record.image_path, _IMAGE_SIZE)
    except ImageError as error:
        return SampleResult(record.key, None, SkippedItem(record.image_item, error.reason, error.detail))
    text = record.training_text()
    meta = record.meta_json(image.original_size)
    before = dict(_BUILDER.stats)
    dialogues = _BUILDER.build(
        key=record.key, sections=meta["sections"], labels=meta["labels"], view=record.view, report_text=text
    )
    stats = {
        name: value - before.get(name, 0) for name, value in _BUILDER.stats.items() if value != before.get(name, 0)
    }
    members = {
        "jpg": image.jpeg,
        "txt": text.encode("utf-8"),
        "json": json.dumps(meta, ensure_ascii=False).encode("utf-8"),
        "conv.json": json.dumps({"dialogues": dialogues}, ensure_ascii=False).encode("utf-8"),
    }
    return SampleResult(record.key, members, None, image.conversions, stats)


def build_samples(records: list[CXRRecord]) -> list[SampleResult]:
    """`build_sample` over a chunk (one inter-process round trip per chunk)."""
    return [build_sample(record) for record in records]


class _Results:
    """Sample results in the order of `records`, from this process (workers=1) or a process pool.

    At most `4 x workers` chunks are in flight: a slow sample (an LLM timeout) then cannot let the
    other workers pile encoded images up in memory, and a worker that dies (out of memory)
    raises `BrokenProcessPool` here instead of hanging the run.
    """

    def __init__(self, records: list[CXRRecord], options: PrepareOptions) -> None:
        self.executor: ProcessPoolExecutor | None = None
        if options.workers == 1 or len(records) < 2:
            _init_worker(options)
            self.iterator: Iterator[SampleResult] = map(build_sample, records)
            return
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self.executor = ProcessPoolExecutor(
            options.workers,
            mp_context=multiprocessing.get_context(method),
            initializer=_init_worker,
            initargs=(options,),
        )
        chunksize = max(1, min(8, len(records) // (options.workers * 8)))
        chunks = [records[start : start + chunksize] for start in range(0, len(records), chunksize)]
        self.iterator = self._ordered(chunks, ahead=options.workers * 4)

    def _ordered(self, chunks: list[list[CXRRecord]], ahead: int) -> Iterator[SampleResult]:
        assert self.executor is not None
        window: deque[Future[list[SampleResult]]] = deque()
        for chunk in chunks:
            window.append(self.executor.submit(build_samples, chunk))
            if len(window) >= ahead:
                yield from window.popleft().result()
        while window:
            yield from window.popleft().result()

    def __iter__(self) -> Iterator[SampleResult]:
        return self

    def __next__(self) -> SampleResult:
        return next(self.iterator)

    def close(self) -> None:
        """Stop the workers (also after an error or Ctrl-C); a no-op for in-process runs."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- the run


def _write_shard(plan: ShardPlan, split_dir: Path, results: Iterator[SampleResult]) -> dict[str, Any]:
    """Consume this shard's results, write the tar, and record its state; returns the state."""
    writer = ShardWriter(split_dir, plan.index)
    skipped: list[dict[str, str]] = []
    conversions: Counter[str] = Counter()
    dialogue_stats: Counter[str] = Counter()
    try:
        for record in plan.records:
            result = next(results)
            if result.key != record.key:
                raise RuntimeError(f"shard {plan.split}/{writer.name}: got {result.key}, expected {record.key}")
            conversions.update(result.conversions)
            dialogue_stats.update(result.dialogue_stats)
            if result.members is None:
                assert result.skipped is not None
                skipped.append(result.skipped.to_json())
            else:
                writer.write(result.key, result.members)
        info = writer.close()
        if info is None:  # every image skipped: a tar left by an earlier run under this name must go
            (split_dir / writer.name).unlink(missing_ok=True)
    except BaseException:
        writer.abort()
        raise
    state = {
        "fingerprint": plan.fingerprint,
        "shard": info.to_json() if info is not None else None,
        "skipped": skipped,
        "converted": dict(sorted(conversions.items())),
        "dialogue_stats": dict(sorted(dialogue_stats.items())),
    }
    write_json_atomic(_state_path(split_dir, plan.index), state)
    return state


def run_prepare(
    scan: SourceScan, out: str | Path, options: PrepareOptions, stream: TextIO | None = None
) -> PrepareResult:
    """Write shards and manifests for every split of `scan` under `out`, reusing finished shards."""
    out = Path(out)
    with _exclusive(out):
        return _run_locked(scan, out, options, stream)


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Refuse a second prepare writing into the same folder (the lock dies with its process)."""
    import fcntl

    global _LOCK_HANDLE
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".prepare.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise ValueError(
                f"{out}: another `lit-medxchat data prepare` is writing here; wait for it to end"
            ) from error
        _LOCK_HANDLE = handle
        try:
            yield
        finally:
            _LOCK_HANDLE = None


def _run_locked(scan: SourceScan, out: Path, options: PrepareOptions, stream: TextIO | None) -> PrepareResult:
    plans = plan_shards(scan.records, options)
    states: dict[tuple[str, int], dict[str, Any]] = {}
    pending: list[ShardPlan] = []
    for split in SPLITS:
        split_dir = out / split
        _clean_split_dir(split_dir, plans[split])
        for plan in tqdm(plans[split], desc=f"check {split} shards", leave=False, disable=not options.progress):
            state = _reusable_state(split_dir, plan)
            if state is None:
                pending.append(plan)
            else:
                states[(split, plan.index)] = state
    records = [record for plan in pending for record in plan.records]
    results = _Results(records, options)
    try:
        with tqdm(total=len(records), desc="prepare", unit="image", disable=not options.progress) as bar:
            for plan in pending:
                states[(plan.split, plan.index)] = _write_shard(plan, out / plan.split, results)
                bar.update(len(plan.records))
    except BrokenProcessPool as error:
        raise RuntimeError(
            f"a decoding worker died ({error}), perhaps out of memory; the finished shards are kept: "
            "rerun the same command to resume, with fewer --workers if memory is short"
        ) from error
    finally:
        results.close()
    manifests = {}
    for split in SPLITS:
        split_states = [states[(split, plan.index)] for plan in plans[split]]
        manifests[split] = _write_split_manifest(out / split, split, split_states, scan, options)
    pending_count = Counter(plan.split for plan in pending)
    result = PrepareResult(
        manifests=manifests,
        reused_shards={split: len(plans[split]) - pending_count[split] for split in SPLITS},
        written_shards={split: pending_count[split] for split in SPLITS},
    )
    print_summary(result, stream or sys.stdout)
    return result


def _write_split_manifest(
    split_dir: Path, split: str, states: list[dict[str, Any]], scan: SourceScan, options: PrepareOptions
) -> dict[str, Any]:
    skipped = [item.to_json() for item in scan.skipped.get(split, [])]
    converted: Counter[str] = Counter(scan.converted.get(split, {}))
    dialogue_stats: Counter[str] = Counter()
    shards = []
    for state in states:
        skipped.extend(state["skipped"])
        converted.update(state["converted"])
        dialogue_stats.update(state["dialogue_stats"])
        if state["shard"] is not None:
            shards.append(ShardInfo(**state["shard"]))
    manifest = build_manifest(
        split=split,
        shards=shards,
        skipped=skipped,
        converted_by_reason=dict(converted),
        dialogue_stats=dict(dialogue_stats),
        source=scan.info,
        options=options.content_options(),
    )
    write_json_atomic(split_dir / MANIFEST_NAME, manifest)
    return manifest


def print_summary(result: PrepareResult, stream: TextIO) -> None:
    """Source counts, per-split sample/shard counts, skipped and converted items by reason, dialogue statistics."""
    source = next(iter(result.manifests.values()))["source"]
    counts = {name: value for name, value in source.items() if isinstance(value, int)}
    print(
        f"source {source.get('kind')}: " + ", ".join(f"{name} {value}" for name, value in counts.items()), file=stream
    )
    print(f"{'split':<10}{'samples':>9}{'shards':>8}{'reused':>8}{'skipped':>9}", file=stream)
    for split, manifest in result.manifests.items():
        print(
            f"{split:<10}{manifest['num_samples']:>9}{len(manifest['shards']):>8}"
            f"{result.reused_shards[split]:>8}{len(manifest['skipped']):>9}",
            file=stream,
        )
    for title, field_name in (
        ("skipped", "skipped_by_reason"),
        ("converted", "converted_by_reason"),
        ("dialogues", "dialogue_stats"),
    ):
        totals: Counter[str] = Counter()
        for manifest in result.manifests.values():
            totals.update(manifest[field_name])
        if totals:
            print(f"{title}: " + ", ".join(f"{name} {count}" for name, count in sorted(totals.items())), file=stream)


def prepare_source(
    source: str | DataSource,
    out: str | Path,
    arguments: Mapping[str, Any] | None = None,
    options: PrepareOptions | None = None,
    view_predictor: FileViewPredictor | None = None,
) -> PrepareResult:
    """`lit-medxchat data prepare <source>`: scan a registered source, fill missing views, write shards.

    Args:
        source: a name in `datamodules.sources.registry` ("mimic-cxr", "iu-xray", ...) or a `DataSource`.
        out: the output folder (`<out>/<split>/shard-*.tar` and `manifest.json`).
        arguments: the source's own options by keyword (`{"root": ..., "reports": ...}`); defaults filled in.
        options: how to write the shards.
        view_predictor: an already loaded view classifier (`FileViewPredictor`, such as
            `lit_medxchat.inference.classify_views.ViewPredictor`): images without a source view get
            its view, and a source that asks for it (IU X-ray with a views CSV) is compared with it.
            Data preparation never loads a model itself.
    """
    source = get_source(source) if isinstance(source, str) else source
    options = options or PrepareOptions()
    scan_arguments = source.arguments(arguments or {})
    scan = source.scan(progress=options.progress, **scan_arguments)
    if view_predictor is not None:
        summary = fill_views(
            scan,
            view_predictor,
            compare=source.compares_views(scan_arguments),
            source_name=source.view_source_name,
            progress=options.progress,
        )
        print(describe(summary), file=sys.stdout)
    return run_prepare(scan, out, options)


def prepare_mimic_cxr(
    root: str | Path,
    out: str | Path,
    reports: str | Path | None = None,
    options: PrepareOptions | None = None,
    view_predictor: FileViewPredictor | None = None,
) -> PrepareResult:
    """`lit-medxchat data prepare mimic-cxr`: a MIMIC-CXR-JPG tree (and its reports) to shards.

    With `view_predictor`, images whose metadata lacks `ViewPosition` get the view classifier's view.
    """
    return prepare_source("mimic-cxr", out, {"root": root, "reports": reports}, options, view_predictor)


def prepare_iu_xray(
    reports: str | Path,
    images: str | Path,
    out: str | Path,
    views_csv: str | Path | None = None,
    options: PrepareOptions | None = None,
    view_predictor: FileViewPredictor | None = None,
) -> PrepareResult:
    """`lit-medxchat data prepare iu-xray`: Open-i XML reports and PNG images to shards.

    With `view_predictor`, images the views CSV does not list (all of them without a CSV) get the
    view classifier's view; with a CSV too, the CSV wins and the two are compared.
    """
    arguments = {"reports": reports, "images": images, "views_csv": views_csv}
    return prepare_source("iu-xray", out, arguments, options, view_predictor)


__all__ = [
    "PrepareOptions",
    "PrepareResult",
    "build_sample",
    "plan_shards",
    "prepare_iu_xray",
    "prepare_mimic_cxr",
    "prepare_source",
    "run_prepare",
]
