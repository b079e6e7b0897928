"""Run the metric callbacks on `FixedOutputModule` with N CPU processes; write what each rank logged.

Usage: ``python -m tests.callbacks.run_metrics OUT_DIR DEVICES``. Used by the 2-process test (as a
subprocess: DDP must not start inside pytest) and, with 1 device, in-process as the reference.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import lightning as L
import torch

from callbacks.image_metrics import ImageMetrics
from callbacks.report_metrics import ReportMetrics
from callbacks.vqa_metrics import VQAMetrics
from tests.callbacks.fake_models import FixedOutputModule, TinyJudge


def metric_callbacks() -> list[L.Callback]:
    return [
        ReportMetrics(meteor=False),
        VQAMetrics(),
        ImageMetrics(findings_classifier=TinyJudge(), view_classifier=TinyJudge(num_classes=4)),
    ]


def run(out_dir: Path, devices: int) -> dict[str, float]:
    """Validate once; returns (and writes to ``out_dir/rank<r>.json``) this rank's logged scalars."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    callbacks = metric_callbacks()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.validate(FixedOutputModule())
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(logged, indent=1, sort_keys=True))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return logged


if __name__ == "__main__":
    run(Path(sys.argv[1]), int(sys.argv[2]))
