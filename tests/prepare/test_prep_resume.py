"""Restartable prepare: kill -9 mid-run, rerun, and get exactly what an uninterrupted run gives."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from prep_fixtures import make_mimic_tree

from datamodules.prepare import PrepareOptions, prepare_mimic_cxr
from lit_medxchat.inference.prepare_cli import main

SPLITS = ("train", "validate", "test")

# Runs the CLI and, after the N-th sample is written, announces itself and waits to be killed.
KILLABLE = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from datamodules import shards
    from lit_medxchat.inference.prepare_cli import main

    marker, stop_at = Path(sys.argv[1]), int(sys.argv[2])
    original, written = shards.ShardWriter.write, [0]

    def write(self, key, members):
        original(self, key, members)
        written[0] += 1
        if written[0] == stop_at:
            self._raw.flush()
            marker.write_text(str(os.getpid()))
            time.sleep(300)

    shards.ShardWriter.write = write
    sys.exit(main(sys.argv[3:]))
    """
)


def _manifests(out: Path) -> dict[str, dict]:
    manifests = {}
    for split in SPLITS:
        manifest = json.loads((out / split / "manifest.json").read_text())
        manifest.pop("created")
        manifests[split] = manifest
    return manifests


def _argv(root: Path, out: Path, workers: int) -> list[str]:
    return [
        "mimic-cxr", "--root", str(root), "--out", str(out), "--image-size", "40",
        "--samples-per-shard", "3", "--workers", str(workers), "--no-progress",
    ]  # fmt: skip


def test_rerun_after_kill_equals_an_uninterrupted_run(tmp_path):
    tree = make_mimic_tree(tmp_path / "src", num_subjects=3)
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    marker, out = tmp_path / "marker", tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, str(script), str(marker), "5", *_argv(tree.root, out, workers=2)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None, "prepare ended before it could be killed"
            assert time.monotonic() < deadline, "prepare never reached the kill point"
            time.sleep(0.05)
        # kill -9 the main process only: its decoding workers may outlive it, and must not block the rerun
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        _check_killed_state_and_rerun(tree.root, out, tmp_path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the orphaned workers, if any are left


def _check_killed_state_and_rerun(root: Path, out: Path, tmp_path: Path) -> None:
    # 4 train samples = 2 finished shards; the 5th sample sits in an unfinished validate shard
    assert sorted(p.name for p in (out / "train").glob("shard-*")) == ["shard-000000.tar", "shard-000001.tar"]
    assert [p.name for p in (out / "validate").glob("shard-*")] == ["shard-000000.tar.partial"]
    assert not any(out.glob("*/manifest.json")), "an unfinished run must list no shard"
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("*.tar")}

    assert main(_argv(root, out, workers=1)) == 0
    assert main(_argv(root, tmp_path / "clean", workers=1)) == 0
    assert _manifests(out) == _manifests(tmp_path / "clean")
    assert {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("*.tar")} == finished, "shards were rewritten"
    for split in SPLITS:
        for shard in _manifests(out)[split]["shards"]:
            assert (out / split / shard["name"]).read_bytes() == (
                tmp_path / "clean" / split / shard["name"]
            ).read_bytes()
    assert not list(out.rglob("*.partial"))


def test_damaged_shards_and_changed_options_are_rebuilt(tmp_path):
    tree = make_mimic_tree(tmp_path / "src", num_subjects=3)
    options = PrepareOptions(image_size=40, samples_per_shard=3, workers=1, progress=False)
    first = prepare_mimic_cxr(tree.root, tmp_path / "out", options=options)
    assert first.written_shards == {"train": 2, "validate": 2, "test": 2}
    again = prepare_mimic_cxr(tree.root, tmp_path / "out", options=options)
    assert again.reused_shards == {"train": 2, "validate": 2, "test": 2} and sum(again.written_shards.values()) == 0

    shard = tmp_path / "out" / "test" / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF
    shard.write_bytes(bytes(data))
    repaired = prepare_mimic_cxr(tree.root, tmp_path / "out", options=options)
    assert repaired.written_shards == {"train": 0, "validate": 0, "test": 1}
    assert repaired.manifests["test"]["shards"] == first.manifests["test"]["shards"]

    bigger = PrepareOptions(image_size=56, samples_per_shard=2, workers=1, progress=False)
    rebuilt = prepare_mimic_cxr(tree.root, tmp_path / "out", options=bigger)
    assert rebuilt.written_shards == {"train": 2, "validate": 2, "test": 2}
    assert sorted(p.name for p in (tmp_path / "out" / "train").glob("shard-*")) == [
        "shard-000000.tar",
        "shard-000001.tar",
    ]
    assert rebuilt.manifests["train"]["options"]["image_size"] == 56


def test_a_second_prepare_into_the_same_folder_is_refused(tmp_path):
    import fcntl

    import pytest

    tree = make_mimic_tree(tmp_path / "src", num_subjects=1, studies_per_subject=1)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".prepare.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="another"):
            prepare_mimic_cxr(tree.root, out, options=PrepareOptions(image_size=32, workers=1, progress=False))
        assert not (out / "train").exists()
