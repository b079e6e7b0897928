"""The callbacks log, on every rank, the scores of the whole gathered validation set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks.scoring.clinical import clinical_efficacy
from callbacks.scoring.fid import extract_features, fid_from_features
from callbacks.scoring.nlg import report_nlg_scores
from callbacks.scoring.vqa import vqa_accuracy
from lit_medxchat.labeler import label_report
from tests.callbacks.fake_models import NUM_ITEMS, FixedOutputModule, TinyJudge, chat_outputs, image_outputs
from tests.callbacks.run_metrics import run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory) -> dict[str, float]:
    return run(tmp_path_factory.mktemp("single"), devices=1)


def test_logged_scores_equal_direct_scoring_of_all_items(single_process):
    chat = chat_outputs(list(range(NUM_ITEMS)))
    reports = [
        (p, r) for p, r, t in zip(chat["predictions"], chat["references"], chat["tasks"], strict=True) if t == "report"
    ]
    preds, refs = [p for p, _ in reports], [r for _, r in reports]
    nlg = report_nlg_scores(preds, refs, meteor=False)
    for name in ("bleu_1", "bleu_4", "rouge_l", "cider"):
        assert single_process[f"val/{name}"] == pytest.approx(nlg[name], abs=1e-6)
    assert "val/meteor" not in single_process  # disabled, so absent, never a made-up value
    ce = clinical_efficacy([label_report(p) for p in preds], [label_report(r) for r in refs])
    assert single_process["val/ce_f1_micro"] == pytest.approx(ce["ce_f1_micro"], abs=1e-6)
    assert single_process["val/report_n"] == len(reports)

    vqa_items = [i for i, t in enumerate(chat["tasks"]) if t == "vqa"]
    vqa = vqa_accuracy(
        [chat["predictions"][i] for i in vqa_items],
        [chat["references"][i] for i in vqa_items],
        [chat["meta"][i] for i in vqa_items],
    )
    assert single_process["val/vqa_acc"] == pytest.approx(vqa["vqa_acc"])
    assert single_process["val/vqa_acc/presence"] == pytest.approx(vqa["vqa_acc/presence"]) == 0.5

    images = image_outputs(list(range(NUM_ITEMS)))
    judge = TinyJudge()
    fid = fid_from_features(extract_features(judge, images["real"]), extract_features(judge, images["generated"]))
    assert single_process["val/fid_tiny-judge"] == pytest.approx(fid, rel=1e-5)
    assert single_process["val/t2i_n"] == NUM_ITEMS
    assert 0.0 <= single_process["val/t2i_findings_acc"] <= 1.0 and "val/t2i_view_acc" in single_process


def test_two_process_ddp_equals_single_process(single_process, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.callbacks.run_metrics", str(tmp_path), "2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # every rank logs the same values (checkpoint monitors agree)
    assert set(ranks[0]) == set(single_process)
    for name, value in single_process.items():
        assert ranks[0][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_samples_go_to_wandb_only_when_asked(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    from callbacks.image_metrics import ImageMetrics
    from callbacks.report_metrics import ReportMetrics

    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    files = {}
    for opt_in in (False, True):
        logger = WandbLogger(project="metrics-test", save_dir=str(tmp_path / str(opt_in)), offline=True)
        callbacks = [
            ReportMetrics(meteor=False, clinical=False, log_samples=opt_in, num_samples=3),
            ImageMetrics(findings_classifier=TinyJudge(), log_samples=opt_in, num_samples=4),
        ]
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            callbacks=callbacks,
            logger=logger,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.validate(FixedOutputModule())
        logger.experiment.finish()
        files[opt_in] = {p.name for p in (tmp_path / str(opt_in)).rglob("*") if "media" in p.parts}
    assert not files[False]
    assert any(n.startswith("val/report_samples") or "report_samples" in n for n in files[True]), files[True]
    assert any(n.endswith(".png") for n in files[True]), files[True]


def test_batches_without_outputs_are_counted_and_wrong_outputs_rejected():
    from callbacks.vqa_metrics import VQAMetrics

    callback = VQAMetrics()
    callback._batch_end(None, None, None)
    callback._batch_end(chat_outputs([1, 3]), None, None)
    assert callback._batches_without_outputs == 1 and len(callback._items) == 2
    with pytest.raises(TypeError, match="must return"):
        callback._batch_end(torch.zeros(1), None, None)


def test_test_stage_logs_under_test_prefix():
    from callbacks.vqa_metrics import VQAMetrics

    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=[VQAMetrics()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (results,) = trainer.test(FixedOutputModule(), verbose=False)
    assert results["test/vqa_n"] == NUM_ITEMS // 2
    assert not any(k.startswith("val/") for k in results)


def test_scoring_error_reaches_the_user():
    from callbacks.report_metrics import ReportMetrics

    def broken_labeler(text: str) -> dict:
        raise KeyError("labeler cannot read this")

    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=[ReportMetrics(meteor=False, labeler=broken_labeler)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(KeyError, match="labeler cannot read"):
        trainer.validate(FixedOutputModule(), verbose=False)
