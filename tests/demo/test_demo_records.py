"""The demo's stage records: markers round-trip into the same dataclasses, markers written by the earlier
dict-returning stages still load, a marker of another layout is recomputed, and the report reads the records."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lit_medxchat.demo.records import MarkerLayoutError, from_json, to_json
from lit_medxchat.demo.results import (
    ChatEvaluation,
    ChatExamples,
    ChatTurn,
    ClassifierEvaluation,
    DemoResults,
    DiffusionEvaluation,
    PreparedShards,
    SynthResult,
    TrainingRun,
)
from lit_medxchat.demo.stages import Stage, StageRunner
from lit_medxchat.demo.summary import evidence_rows

FINGERPRINT = {"scale": {"num_subjects": 3}, "seed": 0, "phantom": True}
RECORDS: dict[str, type] = typing.get_type_hints(DemoResults)  # stage name -> the record it returns


def old_layout_results(out: Path) -> dict[str, dict[str, Any]]:
    """Every stage's `results` as the dict-returning stages wrote them into their markers."""
    run = {"checkpoint": str(out / "runs/x/checkpoints/last.ckpt"), "metrics_csv": ""}
    branch = {"scores": {"fid_64": 40.0, "test_loss": 0.2}, "fid_key": "fid_64", "view_agreement": 0.95,
              "detection_rate": 0.6, "no_finding_rate": 0.2, "pairs": 12}
    return {
        "synth": {"studies": 10, "images": 20, "anatomy": "phantom"},
        "prepare": {split: {"samples": n, "skipped": 0} for split, n in (("train", 14), ("validate", 3), ("test", 3))},
        "tokenizer": {"path": str(out / "runs/tokenizer")},
        "view_classifier": run,
        "findings_classifier": {**run, "export": str(out / "runs/findings-classifier/export")},
        "evaluate_classifiers": {
            "view": {"accuracy": 0.9, "frontal_lateral_accuracy": 1.0, "majority_accuracy": 0.5,
                     "majority_frontal_lateral_accuracy": 0.6, "majority_class": "PA", "num_images": 10},
            "findings": {"macro_auroc": 0.8, "per_label": {"Pleural Effusion": 0.9, "Edema": float("nan")},
                         "labels_scored": ["Pleural Effusion"]},
        },
        "diffusion_base": {**run, "sd_folder": str(out / "runs/diffusion-base/sd")},
        "diffusion": run,
        "evaluate_diffusion": {"trained": branch, "untrained": {**branch, "view_agreement": 0.5},
                               "contact_sheet": str(out / "figures/real-vs-generated.png")},
        "lm_base": {**run, "llm_folder": str(out / "runs/lm-base/llm")},
        "chat": run,
        "chat_blank": run,
        "evaluate_chat": {
            "report": {"image": {"ce_f1_micro": 0.5, "bleu_4": 0.1, "test_loss": 1.0},
                       "blank_images": {"ce_f1_micro": 0.3, "bleu_4": None, "test_loss": 1.2},
                       "most_frequent_report": {"ce_f1_micro": 0.2}, "most_frequent_report_text": "Normal.",
                       "examples": [{"reference": "Effusion.", "generated": "Effusion."}],
                       "image_model_loss_blank_input": 1.5},
            "vqa": {"image": {"vqa_acc": 0.7, "vqa_acc/presence": 0.8}, "blank_images": {"vqa_acc": 0.5},
                    "majority_answer": {"vqa_acc": 0.6, "vqa_acc/presence": 0.5}, "answers_with_xray_tags": 0,
                    "answers": 16},
            "t2i": {"image": {"request_rate": 0.95, "view_rate": 1.0, "finding_rate": 0.95, "n": 20},
                    "blank_images": {"request_rate": 0.1, "view_rate": 0.5, "finding_rate": 0.1, "n": 20},
                    "examples": [{"prediction": "<Xray> A lateral view. </Xray>", "reference": "<Xray> x </Xray>"}]},
        },
        "chat_examples": {
            "transcript": [{"role": "user", "content": "Generate a report.", "image": "figures/in.jpg"},
                           {"role": "assistant", "content": "Effusion.", "reference": "Effusion."}],
            "finding": "pleural effusion",
            "xray_prompts": [],
        },
    }


def _write_markers(out: Path, results: dict[str, dict[str, Any]]) -> None:
    (out / "stages").mkdir(parents=True, exist_ok=True)
    for name, payload in results.items():
        marker = {"fingerprint": FINGERPRINT, "seconds": 2.0, "results": payload}
        (out / "stages" / f"{name}.json").write_text(json.dumps(marker, indent=2, sort_keys=True))


def _never_run(name: str) -> Any:
    def run(_: Path) -> Any:
        raise AssertionError(f"stage {name} should have been read from its marker")

    return run


def test_markers_of_the_earlier_dict_layout_load_into_the_records(tmp_path: Path) -> None:
    _write_markers(tmp_path, old_layout_results(tmp_path))
    logged: list[str] = []
    runner = StageRunner(tmp_path, FINGERPRINT, log=logged.append)
    stages = [Stage(name, name, _never_run(name), kind) for name, kind in RECORDS.items()]
    results = DemoResults(**runner.run_all(stages))
    assert all("done earlier (2 s), skipped" in line for line in logged) and len(logged) == len(RECORDS)
    assert results.prepare.splits()["validate"].samples == 3
    assert results.evaluate_chat.t2i is not None and results.evaluate_chat.t2i.image.n == 20
    assert results.chat_examples.transcript[0] == ChatTurn("user", "Generate a report.", image="figures/in.jpg")
    assert math.isnan(results.evaluate_classifiers.findings.per_label["Edema"])
    assert runner.timings == {name: 2.0 for name in RECORDS}


def test_every_record_round_trips_through_its_marker_json(tmp_path: Path) -> None:
    for name, payload in old_layout_results(tmp_path).items():
        record = from_json(RECORDS[name], payload)
        again = from_json(RECORDS[name], json.loads(json.dumps(to_json(record))))
        assert json.dumps(to_json(again), sort_keys=True) == json.dumps(to_json(record), sort_keys=True), name


def test_a_finished_stage_is_reloaded_into_the_same_dataclass(tmp_path: Path) -> None:
    calls: list[str] = []

    def synth(_: Path) -> SynthResult:
        calls.append("synth")
        return SynthResult(studies=4, images=8, anatomy="phantom")

    stages = [Stage("synth", "render", synth, SynthResult)]
    first = StageRunner(tmp_path, FINGERPRINT, log=lambda _: None).run_all(stages)["synth"]
    second = StageRunner(tmp_path, FINGERPRINT, log=lambda _: None).run_all(stages)["synth"]
    assert calls == ["synth"] and isinstance(second, SynthResult) and second == first


def test_a_marker_of_another_layout_is_recomputed_with_a_message(tmp_path: Path) -> None:
    _write_markers(tmp_path, {"synth": {"n_studies": 4, "images": 8, "anatomy": "phantom"}})
    logged: list[str] = []
    stage = Stage("synth", "render", lambda _: SynthResult(4, 8, "phantom"), SynthResult)
    results = StageRunner(tmp_path, FINGERPRINT, log=logged.append).run_all([stage])
    assert results["synth"] == SynthResult(4, 8, "phantom")
    assert "older layout" in logged[0] and "n_studies" in logged[0] and "running it again" in logged[0]
    saved = json.loads((tmp_path / "stages" / "synth.json").read_text())["results"]
    assert saved == {"studies": 4, "images": 8, "anatomy": "phantom"}


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        ({"studies": 4, "images": 8}, "lacks ['anatomy']"),
        ({"studies": "4", "images": 8, "anatomy": "phantom"}, "results.studies should be int"),
        ([4, 8, "phantom"], "should be an object (SynthResult)"),
    ],
)
def test_layout_errors_name_the_entry(payload: Any, complaint: str) -> None:
    with pytest.raises(MarkerLayoutError, match=re.escape(complaint)):
        from_json(SynthResult, payload)


def test_a_stage_returning_another_type_fails_naming_it(tmp_path: Path) -> None:
    stage = Stage("prepare", "prepare", lambda _: {"train": {}}, PreparedShards)
    with pytest.raises(TypeError, match="stage prepare returned dict, not PreparedShards"):
        StageRunner(tmp_path, FINGERPRINT, log=lambda _: None).run_all([stage])


def test_a_later_stage_reads_an_earlier_record_by_type(tmp_path: Path) -> None:
    runner = StageRunner(tmp_path, FINGERPRINT, log=lambda _: None)
    runner.run_all([Stage("chat", "chat", lambda _: TrainingRun("c.ckpt", ""), TrainingRun)])
    assert runner.result("chat", TrainingRun).checkpoint == "c.ckpt"
    with pytest.raises(TypeError, match="returned TrainingRun, not ChatExamples"):
        runner.result("chat", ChatExamples)
    with pytest.raises(KeyError, match="has not run yet"):
        runner.result("lm_base", TrainingRun)


def test_evidence_rows_read_the_records(tmp_path: Path) -> None:
    old = old_layout_results(tmp_path)
    rows = evidence_rows(
        from_json(ClassifierEvaluation, old["evaluate_classifiers"]),
        from_json(ChatEvaluation, old["evaluate_chat"]),
        from_json(DiffusionEvaluation, old["evaluate_diffusion"]),
    )
    by_metric = {(r.model, r.metric): r for r in rows}
    assert by_metric["view classifier", "PA / AP / lateral accuracy"].baseline_name == "majority class (PA)"
    assert by_metric["findings classifier", "macro AUROC (1 findings present)"].value == 0.8
    assert by_metric["LLM-LoRA reports", "teacher-forced loss of the reference reports"].baseline == 1.5
    assert by_metric["LLM-LoRA VQA", "answers with <Xray> tags (of 16)"].meets_goal
    assert by_metric["LLM-LoRA text-to-CXR", "<Xray> prompt names the requested view and finding (20)"].meets_goal
    fid = by_metric["CXR-SD", "FID (64)"]
    assert (fid.value, fid.baseline, fid.lower_is_better) == (40.0, 40.0, True)
    assert len(rows) == 3 + 6 + 9 + 3 + 1 + 3  # classifiers, per-finding AUROCs, reports, VQA, t2i, CXR-SD


def test_a_finished_demo_renders_its_report_from_the_markers_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import torch

    from lit_medxchat.demo import summary
    from lit_medxchat.demo.plots import contact_sheet
    from lit_medxchat.demo.run import SCALES, main

    monkeypatch.setattr(summary, "_log_to_wandb", lambda out, rows: None)
    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)
    results = old_layout_results(tmp_path)
    for name, payload in results.items():
        marker = {"fingerprint": {"scale": dataclasses.asdict(SCALES["quick"]), "seed": 0, "phantom": False},
                  "seconds": 2.0, "results": payload}
        (tmp_path / "stages").mkdir(exist_ok=True)
        (tmp_path / "stages" / f"{name}.json").write_text(json.dumps(marker))
    for figure in ("synth-preview.png", "real-vs-generated.png"):
        contact_sheet([("real", [np.zeros((8, 8))], ["x"])], tmp_path / "figures" / figure)

    assert main(["--out", str(tmp_path), "--quick"]) == 0
    out = capsys.readouterr().out
    assert out.count("done earlier (2 s), skipped") == len(RECORDS) and "report: " in out
    html = (tmp_path / "report.html").read_text()
    assert "Built-in dataset: 10 studies, 20 images (phantom); shards: train 14, validate 3, test 3." in html
    evidence = json.loads((tmp_path / "evidence.json").read_text())
    assert {row["model"] for row in evidence["rows"]} >= {"view classifier", "LLM-LoRA VQA", "CXR-SD"}


def test_vqa_protocol_rows_state_each_figure_s_own_n(tmp_path: Path) -> None:
    """Per-category presence rows count only that category's presence questions, not its follow-ups too."""
    old = old_layout_results(tmp_path)
    scores = {"vqa_acc/presence": 0.75, "vqa_n/presence": 240.0, "vqa_acc/location": 0.6, "vqa_n/location": 93.0,
              "vqa_acc/sst": 0.3, "vqa_n/sst": 100.0, "vqa_n/diagnosis/edema": 73.0,
              "presence_vqa_acc/diagnosis/edema": 0.9, "presence_vqa_n/diagnosis/edema": 40.0,
              "presence_vqa_acc/diagnosis/pleural_effusion": 0.85, "presence_vqa_n/diagnosis/pleural_effusion": 40.0,
              "presence_yes_no_rate": 1.0}
    old["evaluate_chat"]["vqa"].update(protocol_image=scores, protocol_blank_images={"vqa_acc/presence": 0.5},
                                       protocol_majority_answer={"vqa_acc/location": 0.4},
                                       protocol_items={"presence:yes": 120, "presence:no": 120})
    rows = evidence_rows(
        from_json(ClassifierEvaluation, old["evaluate_classifiers"]),
        from_json(ChatEvaluation, old["evaluate_chat"]),
        from_json(DiffusionEvaluation, old["evaluate_diffusion"]),
    )
    metrics = {r.metric: r for r in rows if r.model == "LLM-LoRA VQA"}
    assert metrics["VQA presence, balanced (n=240)"].meets_goal  # 0.75 >= 0.70 and >= 0.5 + 0.15
    assert metrics["VQA presence, balanced: edema (n=40)"].value == 0.9
    assert "VQA presence, balanced: pleural effusion (n=40)" in metrics
    assert "VQA location, protocol (n=93)" in metrics
