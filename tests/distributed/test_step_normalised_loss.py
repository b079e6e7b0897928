"""The chat loss is a mean over the answer tokens of the whole optimiser step, on any split of ranks x accumulation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
SCRIPT = HERE / "step_gradient_run.py"
TEXTS = ["findings: small left pleural effusion. impression: effusion.", "PA view of the chest was obtained.",
         "Describe this chest x-ray.", "the lungs are clear. no pneumothorax."] * 20


def _run(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def _relative_difference(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    assert sorted(grads) == sorted(reference), "the same trainable parameters"
    difference = sum(float(((grads[name] - reference[name]) ** 2).sum()) for name in reference) ** 0.5
    return difference / sum(float((reference[name] ** 2).sum()) for name in reference) ** 0.5


@pytest.mark.slow
def test_gradient_of_two_ranks_by_two_micro_batches_equals_one_process(tmp_path: Path) -> None:
    """Proves: one optimiser step over 4 micro-batches (long reports next to one-word answers) gives the same
    gradient of the real chat model on 1 process x 4 accumulated, 2 DDP ranks x 2, and 2 ZeRO-2 ranks x 2: the
    summed token loss over all 4 micro-batches' answer tokens (computed by plain autograd). The per-micro-batch
    mean would differ by more than half (checked, so the test can tell them apart); ZeRO also needs the strategy
    not to divide by the accumulation twice."""
    pytest.importorskip("deepspeed")
    from lit_medxchat.core.tokenizer import train_tokenizer

    train_tokenizer(TEXTS, vocab_size=300, out_dir=tmp_path / "tokenizer")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "lit-medxchat" / "torch_extensions"))
    tokenizer, out = str(tmp_path / "tokenizer"), str(tmp_path)
    for mode in ("reference", "single"):
        _run([sys.executable, str(SCRIPT), mode, tokenizer, out], env)
    for mode in ("ddp", "zero2"):
        _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(SCRIPT),
              mode, tokenizer, out], env)
    reference = torch.load(tmp_path / "reference.pt")
    assert _relative_difference(reference["per_batch_mean"], reference["pooled"]) > 0.5
    for mode in ("single", "ddp", "zero2"):
        grads = torch.load(tmp_path / f"{mode}.pt")
        assert _relative_difference(grads, reference["pooled"]) < 1e-5, mode
