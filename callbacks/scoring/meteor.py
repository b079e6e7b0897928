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


def meteor_score(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    jar: str | Path | None = None,
    max_heap: str = "2G",
    timeout_s: float = 600.0,
) -> float | None:
    """Corpus METEOR of tokenised texts as pycocoevalcap computes it, or None when Java is unavailable.

    The corpus score is METEOR's own aggregate of the per-item statistics (not a mean of item scores).
    """
    java = shutil.which("java")
    jar_path = Path(jar) if jar else find_meteor_jar()
    if java is None:
        _warn_once("no `java` on PATH")
        return None
    if jar_path is None or not jar_path.is_file():
        _warn_once(f"METEOR jar not found ({jar_path or 'pycocoevalcap not installed'})")
        return None
    if not hypotheses:
        return float("nan")
    proc = subprocess.Popen(
        [java, "-jar", f"-Xmx{max_heap}", jar_path.name, "-", "-", "-stdio", "-l", "en", "-norm"],
        cwd=jar_path.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    lines = [
        " ||| ".join(("SCORE", " ||| ".join(refs), hyp.replace("|||", "").replace("  ", " ")))
        for hyp, refs in zip(hypotheses, references, strict=True)
    ]
    # A writer thread keeps the pipes flowing both ways: one round trip per item would cost ~ms each.
    writer = threading.Thread(target=lambda: (proc.stdin.write("\n".join(lines) + "\n"), proc.stdin.flush()))
    try:
        writer.start()
        stats = [proc.stdout.readline().strip() for _ in lines]
        writer.join()
        if any(not s for s in stats):
            raise RuntimeError(f"METEOR jar {jar_path} stopped early: {proc.stderr.read()[-2000:]}")
        proc.stdin.write("EVAL ||| " + " ||| ".join(stats) + "\n")
        proc.stdin.flush()
        for _ in lines:  # per-item scores, not needed
            proc.stdout.readline()
        return float(proc.stdout.readline().strip())
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
