"""A resumable pipeline of named stages: each finished stage leaves `stages/<name>.json` with its results.

Rerunning the demo skips stages whose marker exists (and whose inputs are unchanged, via the
`fingerprint` the stage was run with), so an interrupted demo continues where it stopped and a
finished one re-renders its report in seconds. A stage returns a frozen dataclass (its record); the
marker holds it as JSON and a skipped stage's record is read back into the same dataclass. A marker
that no longer fits the record (written by an older layout) is reported and its stage runs again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lit_medxchat.demo.records import MarkerLayoutError, from_json, to_json

T = TypeVar("T")


@dataclass(frozen=True)
class Stage:
    """One step of the demo. `run(out_dir)` returns an instance of `record` (a dataclass) kept in the marker."""

    name: str
    title: str
    run: Callable[[Path], Any]
    record: type


@dataclass(frozen=True)
class FinishedStage:
    """A stage's record and how long it took (when it ran, possibly in an earlier demo run)."""

    record: Any
    seconds: float


class StageRunner:
    """Runs stages in order, printing progress, skipping the finished ones."""

    def __init__(self, out_dir: Path, fingerprint: dict[str, Any], log: Callable[[str], None] = print) -> None:
        self.out_dir = out_dir
        self.marker_dir = out_dir / "stages"
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        self.log = log
        self.results: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    def result(self, name: str, record: type[T]) -> T:
        """The record a finished stage returned, checked to be a `record` (a later stage's input)."""
        if name not in self.results:
            raise KeyError(f"stage {name!r} has not run yet; stages run so far: {list(self.results)}")
        found = self.results[name]
        if not isinstance(found, record):
            raise TypeError(f"stage {name!r} returned {type(found).__name__}, not {record.__name__}")
        return found

    def _marker(self, stage: Stage) -> Path:
        return self.marker_dir / f"{stage.name}.json"

    def _load_finished(self, stage: Stage) -> FinishedStage | None:
        marker = self._marker(stage)
        if not marker.exists():
            return None
        saved = json.loads(marker.read_text())
        if saved.get("fingerprint") != self.fingerprint:
            self.log(f"  stage {stage.name}: options changed since it ran; running it again")
            return None
        try:
            seconds = saved.get("seconds")
            if not isinstance(seconds, int | float):
                raise MarkerLayoutError(f"seconds should be a number, got {seconds!r:.80}")
            return FinishedStage(from_json(stage.record, saved.get("results")), float(seconds))
        except MarkerLayoutError as error:
            self.log(f"  stage {stage.name}: {marker} was written by an older layout ({error}); running it again")
            return None

    def _save(self, stage: Stage, finished: FinishedStage) -> None:
        payload = {"fingerprint": self.fingerprint, "seconds": finished.seconds, "results": to_json(finished.record)}
        tmp = self._marker(stage).with_suffix(".json.partial")
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
        tmp.replace(self._marker(stage))  # the marker appears only once the stage is complete

    def run_all(self, stages: list[Stage]) -> dict[str, Any]:
        """Every stage's record by stage name (fresh or read back from its marker)."""
        for index, stage in enumerate(stages, start=1):
            header = f"[{index}/{len(stages)}] {stage.title}"
            saved = self._load_finished(stage)
            if saved is not None:
                self.log(f"{header}: done earlier ({saved.seconds:.0f} s), skipped")
                self.results[stage.name] = saved.record
                self.timings[stage.name] = saved.seconds
                continue
            self.log(f"{header} ...")
            start = time.perf_counter()
            record = stage.run(self.out_dir)
            if not isinstance(record, stage.record):
                raise TypeError(f"stage {stage.name} returned {type(record).__name__}, not {stage.record.__name__}")
            finished = FinishedStage(record, time.perf_counter() - start)
            self.results[stage.name] = record
            self.timings[stage.name] = finished.seconds
            self._save(stage, finished)
            self.log(f"{header}: finished in {finished.seconds:.0f} s")
        return self.results
