"""A resumable pipeline of named stages: each finished stage leaves `stages/<name>.json` with its results.

Rerunning the demo skips stages whose marker exists (and whose inputs are unchanged, via the
`fingerprint` the stage was run with), so an interrupted demo continues where it stopped and a
finished one re-renders its report in seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Stage:
    """One step of the demo. `run(out_dir)` returns JSON-serialisable results kept in the marker."""

    name: str
    title: str
    run: Callable[[Path], dict[str, Any]]


class StageRunner:
    """Runs stages in order, printing progress, skipping the finished ones."""

    def __init__(self, out_dir: Path, fingerprint: dict[str, Any], log: Callable[[str], None] = print) -> None:
        self.out_dir = out_dir
        self.marker_dir = out_dir / "stages"
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        self.log = log
        self.results: dict[str, dict[str, Any]] = {}
        self.timings: dict[str, float] = {}

    def _marker(self, stage: Stage) -> Path:
        return self.marker_dir / f"{stage.name}.json"

    def _load_finished(self, stage: Stage) -> dict[str, Any] | None:
        marker = self._marker(stage)
        if not marker.exists():
            return None
        saved = json.loads(marker.read_text())
        if saved.get("fingerprint") != self.fingerprint:
            self.log(f"  stage {stage.name}: options changed since it ran; running it again")
            return None
        return saved

    def run_all(self, stages: list[Stage]) -> dict[str, dict[str, Any]]:
        for index, stage in enumerate(stages, start=1):
            header = f"[{index}/{len(stages)}] {stage.title}"
            saved = self._load_finished(stage)
            if saved is not None:
                self.log(f"{header}: done earlier ({saved['seconds']:.0f} s), skipped")
                self.results[stage.name] = saved["results"]
                self.timings[stage.name] = saved["seconds"]
                continue
            self.log(f"{header} ...")
            start = time.perf_counter()
            results = stage.run(self.out_dir)
            seconds = time.perf_counter() - start
            self.results[stage.name] = results
            self.timings[stage.name] = seconds
            payload = {"fingerprint": self.fingerprint, "seconds": seconds, "results": results}
            tmp = self._marker(stage).with_suffix(".json.partial")
            tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
            tmp.replace(self._marker(stage))  # the marker appears only once the stage is complete
            self.log(f"{header}: finished in {seconds:.0f} s")
        return self.results
