"""`prepare iu-xray` on Open-i XML fixtures: sections, MeSH, labels, patient split, views, bad input."""

from __future__ import annotations

import csv
import json
import tarfile
from collections import Counter

from PIL import Image
from prep_fixtures import cxr_pixels, make_iu_tree, open_i_xml, read_shards

from datamodules.prepare import PrepareOptions, prepare_iu_xray
from datamodules.sources.iu_xray import split_of_report
from lit_medxchat.core.constants import VIEW_SENTENCES
from lit_medxchat.inference.prepare_cli import main
from lit_medxchat.labeler import label_report

SPLITS = ("train", "validate", "test")
OPTIONS = PrepareOptions(image_size=32, samples_per_shard=4, workers=1, progress=False)


def _samples(out):
    samples = {}
    for split in SPLITS:
        samples.update(read_shards(out / split))
    return samples


def test_iu_xray_samples_follow_the_contract(tmp_path):
    reports, images, ids = make_iu_tree(tmp_path / "src", num_reports=5)
    views_csv = tmp_path / "projections.csv"
    with open(views_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "filename", "projection"])
        for image_id in ids:  # the Kaggle naming: "1_IM-0001-1001.dcm.png" for CXR1_1_IM-0001-1001
            number, rest = image_id.removeprefix("CXR").split("_", 1)
            writer.writerow(
                [number, f"{number}_{rest.split('_', 1)[1]}.dcm.png", "Frontal" if rest.endswith("1001") else "Lateral"]
            )
    result = prepare_iu_xray(reports, images, tmp_path / "out", views_csv=views_csv, options=OPTIONS)
    samples = _samples(tmp_path / "out")
    assert sorted(samples) == sorted(ids)
    assert sum(m["num_samples"] for m in result.manifests.values()) == len(ids)
    for key, members in samples.items():
        meta = json.loads(members["json"])
        report_id = key.split("_", 1)[0]
        assert meta["source"] == "iu-xray" and meta["study_id"] == meta["subject_id"] == report_id
        assert meta["split"] == split_of_report(report_id)
        assert meta["view"] == ("PA" if key.endswith("1001") else "LATERAL")
        assert meta["view_position"] in ("Frontal", "Lateral")
        assert meta["mesh"] == ["normal"] and meta["sections"]["comparison"] == "None."
        assert meta["labels"] == label_report(meta["sections"]["impression"])
        assert members["txt"].decode().startswith(VIEW_SENTENCES[meta["view"]] + " findings: ")
        assert {image["dicom_id"] for image in meta["study_images"]} == {
            i for i in ids if i.startswith(report_id + "_")
        }


def test_patient_split_is_deterministic_and_near_7_1_2():
    counts = Counter(split_of_report(f"CXR{n}") for n in range(1, 3001))
    assert [split_of_report("CXR1") for _ in range(3)] == [split_of_report("CXR1")] * 3
    assert abs(counts["train"] / 3000 - 0.7) < 0.04 and abs(counts["test"] / 3000 - 0.2) < 0.04


def test_bad_iu_input_is_counted_and_the_tgz_gives_the_same_shards(tmp_path, capsys):
    reports, images, ids = make_iu_tree(tmp_path / "src", num_reports=4)
    (reports / "90.xml").write_text("<eCitation><uId id='CXR90'/><MeSH>")  # cut short
    (reports / "91.xml").write_text(open_i_xml(91, "Lungs are clear.", "Normal.", [], ["normal"]))
    (reports / "92.xml").write_text(open_i_xml(92, None, None, ["CXR92_1_IM-0092-1001"], []))
    (reports / "93.xml").write_text(open_i_xml(93, "Small effusion.", "Effusion.", ["CXR93_1_IM-0093-1001"], []))
    Image.fromarray(cxr_pixels(92, (64, 64))).save(images / "CXR92_1_IM-0092-1001.png")
    Image.fromarray(cxr_pixels(94, (64, 64))).save(images / "CXR94_1_IM-0094-1001.png")  # no report names it
    result = prepare_iu_xray(reports, images, tmp_path / "out", options=OPTIONS)
    skipped = {i["item"]: i["reason"] for m in result.manifests.values() for i in m["skipped"]}
    assert skipped == {
        "90.xml": "unreadable-xml",
        "91.xml": "report-without-images",
        "CXR92_1_IM-0092-1001.png": "no-usable-section",
        "CXR93_1_IM-0093-1001.png": "missing-image",
        "CXR94_1_IM-0094-1001.png": "no-report",
    }
    samples = _samples(tmp_path / "out")
    on_disk = {p.name for p in images.glob("*.png")}
    assert {f"{key}.png" for key in samples} | (set(skipped) & on_disk) == on_disk
    assert all(json.loads(m["json"])["view"] == "OTHER" for m in samples.values())
    assert all(json.loads(m["json"])["view_position"] == "" for m in samples.values())
    assert "unreadable-xml 1" in capsys.readouterr().out

    archive = tmp_path / "NLMCXR_reports.tgz"
    with tarfile.open(archive, "w:gz") as handle:
        handle.add(reports, arcname="ecgen-radiology")
    argv = ["iu-xray", "--reports", str(archive), "--images", str(images), "--out", str(tmp_path / "from-tgz")]
    assert main([*argv, "--image-size", "32", "--samples-per-shard", "4", "--workers", "1", "--no-progress"]) == 0
    for split in SPLITS:
        from_tgz = json.loads((tmp_path / "from-tgz" / split / "manifest.json").read_text())
        assert from_tgz["shards"] == result.manifests[split]["shards"]
        assert from_tgz["skipped_by_reason"] == result.manifests[split]["skipped_by_reason"]
