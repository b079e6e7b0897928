"""The built-in dataset goes through `prepare mimic-cxr` and every image and label row reconciles."""

from __future__ import annotations

import csv
import gzip
import json

from prep_fixtures import read_shards

from datamodules.prepare import PrepareOptions, prepare_mimic_cxr
from lit_medxchat.core.constants import CHEXPERT_LABELS


def test_builtin_dataset_reconciles_with_its_shards(tmp_path):
    from lit_medxchat.synth.cli import main as synth

    root = tmp_path / "synth"
    argv = ["--out", str(root), "--num-subjects", "2", "--phantom", "--image-size", "64", "--no-progress"]
    assert synth(argv) == 0
    options = PrepareOptions(image_size=32, samples_per_shard=5, workers=2, progress=False)
    result = prepare_mimic_cxr(root, tmp_path / "out", options=options)

    images = {p.stem: p for p in (root / "files").rglob("*.jpg")}
    samples = {}
    for split in ("train", "validate", "test"):
        samples.update(read_shards(tmp_path / "out" / split))
    skipped = [item for manifest in result.manifests.values() for item in manifest["skipped"]]
    assert set(samples) | {item["item"].rsplit("/", 1)[-1].removesuffix(".jpg") for item in skipped} == set(images)
    assert len(samples) == sum(m["num_samples"] for m in result.manifests.values()) == len(images) - len(skipped)
    assert len(samples) > 0

    with gzip.open(root / "mimic-cxr-2.0.0-chexpert.csv.gz", "rt", newline="") as handle:
        rows = {row["study_id"]: row for row in csv.DictReader(handle)}
    from_labeler = {meta["study_id"] for meta in map(json.loads, (m["json"] for m in samples.values()))} - set(rows)
    converted = sum(m["converted_by_reason"].get("labels-from-labeler", 0) for m in result.manifests.values())
    assert (converted > 0) == bool(from_labeler)
    for members in samples.values():
        meta = json.loads(members["json"])
        row = rows.get(meta["study_id"])
        if row is None:
            continue
        assert [meta["labels"][n] for n in CHEXPERT_LABELS] == [
            float(row[n]) if row[n] else None for n in CHEXPERT_LABELS
        ]
