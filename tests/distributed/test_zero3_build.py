"""The chat model built under ZeRO-3 (`zero3_build`, what `ZeroStrategy` opens around `configure_model`): each rank
holds its share of the frozen base from the start, and the model is the one a single process builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

HERE = Path(__file__).parent
TEXTS = ["findings: small left pleural effusion. impression: effusion.", "PA view of the chest was obtained."] * 20


@pytest.mark.slow
def test_zero3_build_holds_a_share_of_the_frozen_base_and_equals_the_whole_build(tmp_path: Path) -> None:
    """Proves, on 2 ranks with the paper config's path (tower and LLM from pretrained folders): right after
    construction each rank holds half the frozen base's bytes, every frozen parameter is partitioned, and the model
    equals a single-process build: same frozen fingerprint (gathered), same trainable start (adapter, LoRA A, token
    rows), LoRA B at zero. Random bases (a config, no folder) are partitioned too and equal their whole build."""
    from lit_medxchat.core.tokenizer import train_tokenizer
    from lit_medxchat.models.causal_lm import build_llm, load_tokenizer
    from lit_medxchat.models.medxchat_options import tiny_options
    from lit_medxchat.models.visual_adapter import build_vision_tower

    train_tokenizer(TEXTS, vocab_size=300, out_dir=tmp_path / "tokenizer")
    options = tiny_options()
    build_llm(options["llm"], load_tokenizer(tmp_path / "tokenizer")).save_pretrained(tmp_path / "llm")
    build_vision_tower(options["vision"]).backbone.save_pretrained(tmp_path / "vision")

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "lit-medxchat" / "torch_extensions"))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(HERE / "zero3_build_run.py"), *(str(tmp_path / name) for name in
                                                               ("tokenizer", "llm", "vision")), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-6000:]
    for rank in (0, 1):
        result = json.loads((tmp_path / f"build{rank}.json").read_text())
        held = result["bytes"]
        assert result["partitioned_frozen"] == result["frozen"] > 0, result
        assert result["trainable_partitioned"] == 0, "trainable parts are built whole, the engine partitions them"
        assert held["frozen_local"] <= 0.51 * held["frozen_whole"], held
        assert result["fingerprints"][0] == result["fingerprints"][1], "a partitioned base must hash as the whole"
        assert result["trainable_equal"] and result["lora_b_zero"], result
        random = result["random"]
        assert random["bytes"]["frozen_local"] <= 0.51 * random["bytes"]["frozen_whole"], random
        assert random["fingerprints"][0] == random["fingerprints"][1] and random["trainable_equal"], random
