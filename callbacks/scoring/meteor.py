"""METEOR 1.5 through pycocoevalcap's jar: exact numbers need Java, so METEOR is optional.

METEOR's paraphrase/synonym tables and alignment live in the Java tool; a Python re-implementation
would not give pycocoevalcap's numbers, so we run the same jar with the same flags
(``-l en -norm``), once per corpus, and pipe all items through one JVM (~5-10 s start-up, ~1-2 GB RSS).
Without Java or the jar, `meteor_score` warns once and returns ``None``: METEOR is then reported
as missing, never as a made-up number. Training never needs Java.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

_WARNED = False


def find_meteor_jar() -> Path | None:
    """pycocoevalcap's ``meteor/meteor-1.5.jar`` (found without importing the package), or None."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    jar = Path(next(iter(spec.submodule_search_locations))) / "meteor" / "meteor-1.5.jar"
    return jar if jar.is_file() else None


def meteor_available(jar: str | Path | None = None) -> bool:
    """True when both a ``java`` executable and the METEOR jar are present."""
    return shutil.which("java") is not None and (Path(jar).is_file() if jar else find_meteor_jar() is not None)


def _warn_once(reason: str) -> None:
    global _WARNED
    if not _WARNED:
        warnings.warn(
            f"METEOR is not computed ({reason}); it is reported as missing. Install Java (e.g. `apt-get install "
            "default-jre-headless`) and `pip install pycocoevalcap` to get METEOR identical to pycocoevalcap.",
            RuntimeWarning,
            stacklevel=3,
        )
        _WARNED = True


class MeteorScorer:
    """One METEOR JVM kept for many corpora: start it early (it loads its tables while other work runs),
    score each validation epoch, close it at the end. Not thread-safe; used from rank 0 only.
    """

    def __init__(self, jar: str | Path | None = None, max_heap: str = "2G") -> None:
        self.jar = Path(jar) if jar else find_meteor_jar()
        self.max_heap = max_heap
        self._proc: subprocess.Popen | None = None

    def start(self) -> bool:
        """Launch the JVM (returns at once); False, with one warning, when Java or the jar is missing."""
        if self._proc is not None and self._proc.poll() is None:
            return True
        java = shutil.which("java")
        if java is None:
            _warn_once("no `java` on PATH")
            return False
        if self.jar is None or not self.jar.is_file():
            _warn_once(f"METEOR jar not found ({self.jar or 'pycocoevalcap not installed'})")
            return False
        self._proc = subprocess.Popen(
            [java, "-jar", f"-Xmx{self.max_heap}", self.jar.name, "-", "-", "-stdio", "-l", "en", "-norm"],
            cwd=self.jar.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
        )
        return True

    def score(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float | None:
        """Corpus METEOR of tokenised texts (METEOR's aggregate of item statistics), None without Java."""
        if len(hypotheses) != len(references):
            raise ValueError(f"got {len(hypotheses)} hypotheses but {len(references)} reference lists")
        if not self.start():
            return None
        if not hypotheses:
            return float("nan")
        proc = self._proc
        lines = [
            " ||| ".join(("SCORE", " ||| ".join(refs), hyp.replace("|||", "").replace("  ", " ")))
            for hyp, refs in zip(hypotheses, references, strict=True)
        ]
        errors: list[BaseException] = []

        def write() -> None:  # a writer thread keeps both pipes flowing: no round trip per item
            try:
                proc.stdin.write("\n".join(lines) + "\n")
                proc.stdin.flush()
            except OSError as err:
                errors.append(err)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        stats = [proc.stdout.readline().strip() for _ in lines]
        writer.join()
        if errors or any(not s for s in stats):
            self.close()
            raise RuntimeError(f"METEOR jar {self.jar} stopped before answering ({errors or 'empty reply'})")
        proc.stdin.write("EVAL ||| " + " ||| ".join(stats) + "\n")
        proc.stdin.flush()
        for _ in lines:  # per-item scores, not needed
            proc.stdout.readline()
        return float(proc.stdout.readline().strip())

    def close(self) -> None:
        """Stop the JVM (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def __del__(self) -> None:
        self.close()


def meteor_score(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], jar: str | Path | None = None
) -> float | None:
    """Corpus METEOR of tokenised texts as pycocoevalcap computes it (one JVM for this call), or None
    (with one warning) when Java or the jar is unavailable."""
    scorer = MeteorScorer(jar)
    try:
        return scorer.score(hypotheses, references)
    finally:
        scorer.close()
