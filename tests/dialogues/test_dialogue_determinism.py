"""Dialogues are the same in every process (workers, reruns), whatever Python's hash seed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import json, sys
sys.path.insert(0, {here!r})
from dialogue_samples import make_sample
from lit_medxchat.dialogues import DialogueBuilder
samples = [
    make_sample("a", "Small right pleural effusion. Trace left pleural effusion. Left PICC line in the SVC.",
                "Right lower lobe consolidation.", Pleural_Effusion=1.0, Consolidation=1.0, Support_Devices=1.0),
    make_sample("b", "The lungs are clear.", "No acute cardiopulmonary process.", view="AP", No_Finding=1.0),
]
builder = DialogueBuilder(seed=5)
print(json.dumps([builder.build(**s) for s in samples], sort_keys=True))
"""


def _run(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    code = SCRIPT.format(here=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_same_dialogues_under_different_hash_seeds():
    first = _run("1")
    assert first.strip().startswith("[[")
    assert _run("2") == first
