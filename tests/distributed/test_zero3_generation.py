"""Generation under ZeRO-3 with ranks that stop at different lengths (and one rank without an image) finishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

HERE = Path(__file__).parent
TEXTS = ["findings: small left pleural effusion. impression: effusion.", "PA view of the chest was obtained.",
         "Generate a report of this chest x-ray.", "the lungs are clear. no pneumothorax."] * 20


@pytest.mark.slow
def test_zero3_decoding_of_different_lengths_keeps_ranks_in_step(tmp_path: Path) -> None:
    """Proves: with every parameter partitioned, rank 0 (1 new token, text only) and rank 1 (6 tokens, 2 images)
    both return from HF and image-contrastive decoding: the finished rank keeps joining the all-gathers; the frozen
    fingerprint of the partitioned model is the unpartitioned one."""
    from lit_medxchat.core.tokenizer import train_tokenizer

    train_tokenizer(TEXTS, vocab_size=300, out_dir=tmp_path / "tokenizer")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "lit-medxchat" / "torch_extensions"))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(HERE / "zero3_generate_run.py"), str(tmp_path / "tokenizer"), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-6000:]
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(result["partitioned"] for result in results), "the rehearsal must partition the parameters"
    # a checkpoint's frozen fingerprint is that of the real weights, not of the empty partitions (no false
    # "frozen base changed" warning when a ZeRO-3 checkpoint is loaded by one process)
    assert all(result["fingerprints"][1] == result["fingerprints"][0] for result in results)
