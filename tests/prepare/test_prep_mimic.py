"""`prepare mimic-cxr`: contract-shaped samples, every bad input counted, parallel = serial, CLI."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from prep_fixtures import add_bad_items, make_mimic_tree, read_shards

from datamodules.prepare import PrepareOptions, prepare_mimic_cxr
from lit_medxchat.core.constants import CHAT_TASKS, CHEXPERT_LABELS, VIEW_CLASSES, VIEW_SENTENCES
from lit_medxchat.inference.prepare_cli import main
from lit_medxchat.labeler import label_report

SPLITS = ("train", "validate", "test")
MANIFEST_FIELDS = {
    "split", "num_samples", "shards", "skipped", "skipped_by_reason", "source", "options", "created", "version",
}  # fmt: skip
META_FIELDS = {
    "dicom_id", "study_id", "subject_id", "split", "view", "view_position", "labels", "sections",
    "original_size", "source", "study_images",
}  # fmt: skip


def _options(**overrides) -> PrepareOptions:
    return PrepareOptions(**{"image_size": 48, "samples_per_shard": 3, "workers": 1, "progress": False, **overrides})


def _all_samples(out: Path) -> dict[str, dict[str, bytes]]:
    samples = {}
    for split in SPLITS:
        samples.update(read_shards(out / split))
    return samples


def test_clean_tree_gives_contract_samples(tmp_path, capsys):
    tree = make_mimic_tree(tmp_path / "src", num_subjects=3)
    result = prepare_mimic_cxr(tree.root, tmp_path / "out", options=_options())
    samples = _all_samples(tmp_path / "out")
    assert sorted(samples) == sorted(tree.images)
    for split in SPLITS:
        manifest = result.manifests[split]
        assert MANIFEST_FIELDS <= set(manifest) and manifest["split"] == split and manifest["skipped"] == []
        on_disk = json.loads((tmp_path / "out" / split / "manifest.json").read_text())
        assert on_disk["num_samples"] == sum(s["num_samples"] for s in on_disk["shards"]) == 4
        assert on_disk["options"]["image_size"] == 48 and on_disk["source"]["kind"] == "mimic-cxr"
    split_of = {row["dicom_id"]: row["split"] for row in tree.splits}
    for key, members in samples.items():
        assert set(members) == {"jpg", "txt", "json", "conv.json"}
        meta = json.loads(members["json"])
        assert set(meta) == META_FIELDS and meta["dicom_id"] == key and meta["split"] == split_of[key]
        assert list(meta["labels"]) == list(CHEXPERT_LABELS) and meta["view"] in VIEW_CLASSES
        assert meta["original_size"] == [120, 150] and meta["source"] == "mimic-cxr"
        partners = {image["dicom_id"] for image in meta["study_images"]}
        assert key in partners and len(partners) == 2
        text = members["txt"].decode()
        assert text.startswith(VIEW_SENTENCES[meta["view"]] + " findings: ")
        assert f"impression: {meta['sections']['impression']}" in text
        image = Image.open(io.BytesIO(members["jpg"]))
        assert image.format == "JPEG" and image.mode == "L" and image.size == (38, 48)
        dialogues = json.loads(members["conv.json"])["dialogues"]
        assert dialogues and {d["task"] for d in dialogues} <= set(CHAT_TASKS)
    row = next(row for row in tree.labels if row["study_id"] == 50000000)
    sample = next(json.loads(m["json"]) for m in samples.values() if json.loads(m["json"])["study_id"] == "50000000")
    assert sample["labels"]["Pleural Effusion"] == float(row["Pleural Effusion"]) and sample["labels"]["Edema"] is None
    assert "train" in capsys.readouterr().out


def test_every_source_image_ends_in_a_shard_or_the_skipped_list(tmp_path, capsys):
    tree = make_mimic_tree(tmp_path / "src", num_subjects=3)
    expected = add_bad_items(tree)
    result = prepare_mimic_cxr(tree.root, tmp_path / "out", options=_options())
    samples = _all_samples(tmp_path / "out")
    skipped = [item for manifest in result.manifests.values() for item in manifest["skipped"]]
    skipped_reason = {item["item"]: item["reason"] for item in skipped}
    assert len(skipped_reason) == len(skipped), "an item is listed twice"

    on_disk = {p.relative_to(tree.root).as_posix() for p in (tree.root / "files").rglob("*.jpg")}
    in_shards = {tree.images[key] for key in samples}
    assert in_shards.isdisjoint(skipped_reason)
    assert on_disk == in_shards | (set(skipped_reason) & on_disk)
    skip_reasons = {"corrupt-image", "truncated-image", "no-report", "no-usable-section", "not-in-metadata"}
    skip_reasons |= {"missing-image", "duplicate-id"}
    for item, outcome in expected.items():
        if outcome in skip_reasons:
            assert skipped_reason.get(item) == outcome, item
    converted = {}
    for manifest in result.manifests.values():
        for reason, count in manifest["converted_by_reason"].items():
            converted[reason] = converted.get(reason, 0) + count
    for key, outcome in expected.items():
        if outcome in ("png-under-jpg-name", "alpha-dropped", "16-bit-to-8-bit", "view-empty", "view-other"):
            assert key in samples, f"{key} ({outcome}) must be converted and kept"
            assert converted.get(outcome, 0) >= 1, outcome
    assert converted["png-under-jpg-name"] == 3 and converted["labels-from-labeler"] == 1

    other = json.loads(samples[tree.metadata[6]["dicom_id"]]["json"])
    assert other["view"] == "OTHER" and other["view_position"] == ""
    assert samples[tree.metadata[6]["dicom_id"]]["txt"].decode().startswith(VIEW_SENTENCES["OTHER"])
    labelled = next(key for key, outcome in expected.items() if outcome == "labels-from-labeler")
    meta = json.loads(samples[labelled]["json"])
    assert meta["labels"] == label_report(meta["sections"]["impression"])

    out = capsys.readouterr().out
    for reason in ("corrupt-image", "truncated-image", "no-report", "no-usable-section", "duplicate-id"):
        assert reason in out
    totals = sum(m["num_samples"] for m in result.manifests.values())
    assert totals == len(samples) == len(on_disk) - len(set(skipped_reason) & on_disk)


def test_reports_zip_and_two_workers_give_the_same_shards(tmp_path):
    tree = make_mimic_tree(tmp_path / "src", num_subjects=3)
    serial = prepare_mimic_cxr(tree.root, tmp_path / "serial", options=_options())
    archive = tmp_path / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for report in sorted((tree.root / "files").rglob("s*.txt")):
            handle.write(report, "mimic-cxr-reports/" + report.relative_to(tree.root).as_posix())
            report.unlink()
    parallel = prepare_mimic_cxr(tree.root, tmp_path / "parallel", reports=archive, options=_options(workers=2))
    for split in SPLITS:
        assert parallel.manifests[split]["shards"] == serial.manifests[split]["shards"]
        assert parallel.manifests[split]["source"]["reports"] == str(archive.resolve())


def test_cli_prepares_and_names_bad_arguments(tmp_path, capsys):
    tree = make_mimic_tree(tmp_path / "src", num_subjects=1, studies_per_subject=1)
    argv = ["mimic-cxr", "--root", str(tree.root), "--out", str(tmp_path / "out"), "--image-size", "32"]
    assert main([*argv, "--workers", "1", "--no-progress"]) == 0
    assert json.loads((tmp_path / "out" / "train" / "manifest.json").read_text())["num_samples"] == 2
    assert main(["mimic-cxr", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")]) == 2
    assert "files/" in capsys.readouterr().err
    (tree.root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    assert main([*argv, "--workers", "1"]) == 2
    assert "mimic-cxr-2.0.0-split.csv.gz" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["mimic-cxr", "--out", "x"])


def test_llm_options_reach_the_dialogue_builder_and_failures_are_counted(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on: every request fails at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tree = make_mimic_tree(tmp_path / "src", num_subjects=1, studies_per_subject=1)
    argv = ["mimic-cxr", "--root", str(tree.root), "--out", str(tmp_path / "out"), "--workers", "1", "--no-progress"]
    endpoint = f"http://127.0.0.1:{port}/v1"
    assert (
        main([*argv, "--image-size", "32", "--llm-endpoint", endpoint, "--llm-model", "m", "--llm-timeout", "2"]) == 0
    )
    manifest = json.loads((tmp_path / "out" / "train" / "manifest.json").read_text())
    assert manifest["options"]["llm_endpoint"] == endpoint and manifest["options"]["llm_model"] == "m"
    assert manifest["dialogue_stats"]["llm_requests"] == manifest["dialogue_stats"]["llm_fallback"] == 2
    assert manifest["num_samples"] == 2
