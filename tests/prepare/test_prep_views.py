"""`data prepare ... --view-classifier`: predicted views in the samples, their sentences and dialogues,
the threshold, counts in the manifest, the views CSV winning (agreement printed), MIMIC images
without `ViewPosition`, and unreadable images skipped with a reason."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from prep_fixtures import make_iu_tree, make_mimic_tree, read_shards
from view_fixtures import random_view_classifier, render_film, save_variant, trained_view_classifier

from lit_medxchat.core.constants import VIEW_SENTENCES
from lit_medxchat.dialogues import DialogueBuilder
from lit_medxchat.inference.prepare_cli import main

SPLITS = ("train", "validate", "test")
COMMON = ["--image-size", "64", "--samples-per-shard", "4", "--workers", "1", "--no-progress"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.set_num_threads(1)
    return trained_view_classifier(tmp_path_factory)


def _iu_films(tmp_path):
    """An IU tree whose `-1001` images are drawn frontals and `-2001` laterals, in mixed file variants."""
    reports, images, ids = make_iu_tree(tmp_path / "src", num_reports=5)
    truth = {}
    for k, image_id in enumerate(ids):
        view = "PA" if image_id.endswith("1001") else "LATERAL"
        film = render_film(view, 7000 + k, size=(300, 360))
        save_variant(film, images / f"{image_id}.png", ("grey", "16bit", "rgba")[k % 3])
        truth[image_id] = view
    return reports, images, truth


def _samples(out):
    samples = {}
    for split in SPLITS:
        samples.update(read_shards(out / split))
    return samples


def _manifests(out):
    return [json.loads((out / split / "manifest.json").read_text()) for split in SPLITS]


def test_iu_views_come_from_the_classifier(tmp_path, model, capsys):
    reports, images, truth = _iu_films(tmp_path)
    broken = sorted(truth)[0]
    (images / f"{broken}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    argv = ["iu-xray", "--reports", str(reports), "--images", str(images), "--out", str(out), *COMMON]
    assert main([*argv, "--view-classifier", str(model)]) == 0
    printed = capsys.readouterr().out
    samples = _samples(out)
    assert set(samples) == set(truth) - {broken}
    builder = DialogueBuilder(seed=0)
    for key, members in samples.items():
        meta = json.loads(members["json"])
        assert meta["view"] == truth[key], key
        assert meta["view_source"] == "classifier" and meta["view_predicted"] == truth[key]
        assert meta["view_probability"] >= 0.8 and len(meta["view_classifier"]) == 16
        text = members["txt"].decode()
        assert text.startswith(VIEW_SENTENCES[truth[key]] + " findings: ")
        dialogues = builder.build(key=key, sections=meta["sections"], labels=meta["labels"], view=meta["view"],
                                  report_text=text)
        assert json.loads(members["conv.json"])["dialogues"] == dialogues  # text-to-CXR asked with this view
        assert {i["dicom_id"]: i["view"] for i in meta["study_images"]}.items() <= {**truth, broken: "OTHER"}.items()
    manifests = _manifests(out)
    summary = manifests[0]["source"]["view_classifier"]
    assert all(m["source"]["view_classifier"] == summary for m in manifests)
    assert summary["threshold"] == 0.8 and summary["failed"] == 1
    frontal = sum(v == "PA" for k, v in truth.items() if k != broken)
    assert summary["predicted"] == {"PA": frontal, "AP": 0, "LATERAL": len(truth) - 1 - frontal, "OTHER": 0,
                                    "unknown": 0}
    assert sum(m["converted_by_reason"].get("view-from-classifier", 0) for m in manifests) == len(truth) - 1
    skipped = [item for m in manifests for item in m["skipped"]]
    assert [(item["item"], item["reason"]) for item in skipped] == [(f"{broken}.png", "corrupt-image")]
    assert f"PA {frontal}" in printed and "unreadable 1" in printed


def test_low_confidence_views_stay_unknown(tmp_path, capsys):
    reports, images, truth = _iu_films(tmp_path)
    out = tmp_path / "out"
    argv = ["iu-xray", "--reports", str(reports), "--images", str(images), "--out", str(out), *COMMON]
    assert main([*argv, "--view-classifier", str(random_view_classifier(tmp_path / "random"))]) == 0
    for members in _samples(out).values():
        meta = json.loads(members["json"])
        assert (meta["view"], meta["view_source"]) == ("OTHER", "classifier")
        assert meta["view_probability"] < 0.8 and meta["view_predicted"] in ("PA", "AP", "LATERAL", "OTHER")
        assert members["txt"].decode().startswith(VIEW_SENTENCES["OTHER"] + " findings: ")
    manifests = _manifests(out)
    assert manifests[0]["source"]["view_classifier"]["predicted"]["unknown"] == len(truth)
    assert sum(m["converted_by_reason"].get("view-unknown-below-threshold", 0) for m in manifests) == len(truth)
    assert f"unknown {len(truth)}" in capsys.readouterr().out


def test_a_views_csv_wins_and_the_agreement_is_printed(tmp_path, model, capsys):
    reports, images, truth = _iu_films(tmp_path)
    wrong = sorted(k for k, v in truth.items() if v == "PA")[0]
    views_csv = tmp_path / "projections.csv"
    with open(views_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "projection"])
        for image_id, view in truth.items():
            stated = "Lateral" if image_id == wrong or view == "LATERAL" else "Frontal"
            writer.writerow([f"{image_id}.png", stated])
    out = tmp_path / "out"
    argv = ["iu-xray", "--reports", str(reports), "--images", str(images), "--out", str(out), *COMMON]
    assert main([*argv, "--views-csv", str(views_csv), "--view-classifier", str(model)]) == 0
    printed = capsys.readouterr().out
    samples = _samples(out)
    meta = {key: json.loads(members["json"]) for key, members in samples.items()}
    assert meta[wrong]["view"] == "LATERAL" and meta[wrong]["classifier_view_predicted"] == "PA"  # the CSV wins
    assert all(m["view_source"] == "csv" for m in meta.values())
    summary = _manifests(out)[0]["source"]["view_classifier"]
    assert summary["compared_with_source"] == len(truth)
    assert summary["agreement"] == summary["frontal_lateral_agreement"] == round(1 - 1 / len(truth), 4)
    assert f"agreement with the source views {1 - 1 / len(truth):.1%} of {len(truth)}" in printed


def test_mimic_images_without_view_position_are_classified(tmp_path, model):
    tree = make_mimic_tree(tmp_path / "mimic", num_subjects=3, studies_per_subject=1, size=(150, 180))
    blanked = {}
    for row in tree.metadata[:2]:  # one PA and one LATERAL image lose their ViewPosition
        key = row["dicom_id"]
        save_variant(render_film(row["ViewPosition"], 9000 + len(blanked), size=(300, 360)),
                     tree.root / tree.images[key], "jpeg")
        blanked[key] = row["ViewPosition"]
        row["ViewPosition"] = ""
    tree.write_tables()
    out = tmp_path / "out"
    assert main(["mimic-cxr", "--root", str(tree.root), "--out", str(out), *COMMON,
                 "--view-classifier", str(model)]) == 0
    for key, members in _samples(out).items():
        meta = json.loads(members["json"])
        if key in blanked:
            assert (meta["view"], meta["view_source"], meta["view_position"]) == (blanked[key], "classifier", "")
        else:
            assert "view_source" not in meta and meta["view"] == meta["view_position"]  # metadata untouched
    summary = _manifests(out)[0]["source"]["view_classifier"]
    assert (summary["predicted"]["PA"], summary["predicted"]["LATERAL"]) == (1, 1)
    assert "compared_with_source" not in summary


def test_a_missing_view_classifier_fails_before_any_work(tmp_path, capsys):
    reports, images, _ = make_iu_tree(tmp_path / "src", num_reports=1)
    out = tmp_path / "out"
    argv = ["iu-xray", "--reports", str(reports), "--images", str(images), "--out", str(out), *COMMON]
    assert main([*argv, "--view-classifier", str(tmp_path / "no-model")]) == 2
    assert "no such checkpoint file or exported folder" in capsys.readouterr().err
    assert main([*argv, "--view-classifier", str(tmp_path), "--view-threshold", "1.5"]) == 2
    assert "(0, 1]" in capsys.readouterr().err
    assert not out.exists()
