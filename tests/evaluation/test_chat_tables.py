"""The evaluation tables' own rules: the paper-comparable NLG rows drop the view sentence, one report per study
(frontal first) for external scorers, and the files are written in the layouts they promise."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lit_medxchat.evaluation.chat_tables import Table, nlg_table, study_rows, vqa_tables, without_view_sentence
from lit_medxchat.evaluation.writers import write_report_csvs, write_tables


def test_view_sentence_is_removed_for_the_paper_comparable_rows() -> None:
    assert without_view_sentence("PA view of the chest was obtained. The lungs are clear.") == "The lungs are clear."
    assert without_view_sentence("lateral VIEW of the chest was obtained.  No effusion.") == "No effusion."
    table = nlg_table({"model": ["PA view of the chest was obtained. The lungs are clear."]},
                      ["AP view of the chest was obtained. The lungs are clear."], meteor=False)
    paper, with_view = table.rows
    assert paper["references"].startswith("without view sentence") and paper["bleu_1"] > with_view["bleu_1"]
    assert table.notes["n"] == 1


def test_one_report_per_study_prefers_a_frontal_image() -> None:
    items = [{"study_id": "s1", "view": "LATERAL", "prediction": "lat", "reference": "r1"},
             {"study_id": "s1", "view": "PA", "prediction": "pa", "reference": "r1"},
             {"study_id": None, "key": "k9", "view": "AP", "prediction": "x", "reference": "r9"}]
    assert study_rows(items) == [{"study_id": "k9", "report": "x", "reference": "r9"},
                                 {"study_id": "s1", "report": "pa", "reference": "r1"}]


def test_vqa_tables_split_topics_from_diagnoses_with_their_counts() -> None:
    scores = {"vqa_acc": 0.5, "vqa_n": 4.0, "vqa_acc/presence": 1.0, "vqa_n/presence": 2.0,
              "vqa_acc/diagnosis/pleural_effusion": 0.0, "vqa_n/diagnosis/pleural_effusion": 1.0,
              "presence_vqa_acc/diagnosis/pleural_effusion": 0.5, "presence_vqa_n/diagnosis/pleural_effusion": 2.0,
              "presence_yes_no_rate": 1.0}
    by_topic, by_diagnosis = vqa_tables({"m": scores}, {"presence:yes": 1, "presence:no": 1, "sst": 2}, 8, 9)
    assert by_topic.rows == [{"model": "m", "overall": 0.5, "n": 4.0, "presence_yes_no_rate": 1.0, "presence": 1.0,
                              "presence n": 2.0}]
    assert by_diagnosis.rows == [{"model": "m", "pleural_effusion": 0.0, "pleural_effusion n": 1.0,
                                  "pleural_effusion (presence)": 0.5, "pleural_effusion n (presence)": 2.0}]
    assert by_topic.notes["n"] == 4 and "8 images" in by_topic.notes["protocol"]


def test_files_hold_the_tables_and_rexrank_layout(tmp_path: Path) -> None:
    table = Table("t1", "Table 1: x", [{"model": "a", "f1": 0.5}, {"model": "b", "f1": float("nan")}], {"n": 2})
    written = write_tables([table], tmp_path)
    assert {p.name for p in written} == {"tables.md", "tables.json", "t1.csv"}
    assert "| a | 0.5000 |" in (tmp_path / "tables.md").read_text() and "n/a" in (tmp_path / "tables.md").read_text()
    assert json.loads((tmp_path / "tables.json").read_text(), parse_constant=str)["t1"]["notes"] == {"n": 2}
    write_report_csvs([{"study_id": "s1", "report": "gen, with comma", "reference": "ref"}], tmp_path)
    with (tmp_path / "rexrank" / "predicted_reports.csv").open() as handle:
        assert list(csv.DictReader(handle)) == [{"study_id": "s1", "report": "gen, with comma"}]
    with (tmp_path / "rexrank" / "gt_reports.csv").open() as handle:
        assert list(csv.DictReader(handle)) == [{"study_id": "s1", "report": "ref"}]
