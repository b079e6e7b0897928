"""The shard stream and its loader: same batches for any worker count, exact resume, counted skips."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from dm_shards import grey_level, key_of, write_split

from datamodules.classifier import ClassifierDataModule
from datamodules.manifest import load_manifest
from datamodules.resume import ResumableLoader
from datamodules.shard_reader import ShardMismatchError


def _module(data_dir, stage: str = "fit", **options) -> ClassifierDataModule:
    options = {"batch_size": 4, "num_workers": 0, "image_size": 16, "shuffle_window": 8, **options}
    module = ClassifierDataModule(str(data_dir), **options)
    module.setup(stage)
    return module


def _epoch_keys(loader: ResumableLoader, epoch: int) -> list[list[str]]:
    loader.set_epoch(epoch)
    return [batch["keys"] for batch in loader]


def test_batches_do_not_depend_on_the_number_of_workers(shard_dir):
    reference = [_epoch_keys(_module(shard_dir).train_dataloader(), epoch) for epoch in (0, 1)]
    assert len(reference[0]) == 37 // 4 and reference[0] != reference[1]
    for epoch in (0, 1):
        flat = [key for batch in reference[epoch] for key in batch]
        assert len(flat) == len(set(flat)) == 36
    loader = _module(shard_dir, num_workers=2).train_dataloader()
    assert [_epoch_keys(loader, epoch) for epoch in (0, 1)] == reference


def test_pixels_travel_with_their_key(shard_dir):
    module = _module(shard_dir, augment=False, image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0))
    batch = next(iter(module.val_dataloader()))
    for key, image in zip(batch["keys"], batch["pixel_values"], strict=True):
        index = int(key.split("-")[1])
        centre = image[:, 6:10, 6:10]
        assert torch.allclose(centre, torch.full_like(centre, grey_level(index) / 255), atol=0.05)
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2]), "grey replicated to RGB"


@pytest.mark.parametrize("workers_before,workers_after", [(0, 0), (2, 0), (0, 2)])
def test_loader_state_resumes_mid_epoch_exactly(shard_dir, workers_before, workers_after):
    uninterrupted = _epoch_keys(_module(shard_dir).train_dataloader(), 1)
    loader = _module(shard_dir, num_workers=workers_before).train_dataloader()
    loader.set_epoch(1)
    iterator = iter(loader)
    first = [next(iterator)["keys"] for _ in range(3)]
    state = loader.state_dict()
    assert state["ranks"][0]["epoch"] == 1 and state["ranks"][0]["batches"] == 3
    del iterator

    fresh = _module(shard_dir, num_workers=workers_after).train_dataloader()
    fresh.load_state_dict(json.loads(json.dumps(state)))  # the state must survive serialisation
    fresh.set_epoch(1)
    rest = [batch["keys"] for batch in fresh]
    assert first + rest == uninterrupted
    assert _epoch_keys(fresh, 2) == _epoch_keys(_module(shard_dir).train_dataloader(), 2)


def test_bad_samples_are_skipped_counted_and_logged(tmp_path, caplog):
    write_split(tmp_path, "train", [6, 6], corrupt=frozenset({2, 9}))
    loader = _module(tmp_path, batch_size=3).train_dataloader()
    with caplog.at_level(logging.WARNING, logger="datamodules.streaming"):
        batches = [batch["keys"] for batch in loader]
    assert len(batches) == 4, "a skipped sample must not change the number of steps"
    keys = [key for batch in batches for key in batch]
    assert sorted(keys) == sorted(key_of(i) for i in range(12) if i not in (2, 9))
    assert sum(loader.skipped.values()) == 2 and all(name.startswith("decode-error") for name in loader.skipped)
    assert "shard-000000.tar: sample 2 (dicom-00002) skipped" in caplog.text
    assert loader.state_dict()["ranks"][0]["counts"] == {f"skipped/{name}": 2 for name in loader.skipped}


def test_manifest_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare"):
        load_manifest(tmp_path, "train")
    write_split(tmp_path, "train", [3, 2])
    manifest_path = tmp_path / "train" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["shards"][0]["num_samples"] = 4
    manifest["num_samples"] = 6
    manifest_path.write_text(json.dumps(manifest))
    loader = _module(tmp_path, batch_size=2).train_dataloader()
    with pytest.raises(ShardMismatchError, match="shard-000000.tar holds 3 samples but its manifest says 4"):
        list(loader)
    manifest["num_samples"] = 9
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="num_samples=9"):
        load_manifest(tmp_path, "train")


def test_too_few_samples_for_one_batch_is_an_error(shard_dir):
    with pytest.raises(ValueError, match="cannot fill one batch"):
        _module(shard_dir, batch_size=64).train_dataloader()


def test_a_batch_with_no_good_sample_repeats_the_previous_one(tmp_path):
    write_split(tmp_path, "validate", [6], corrupt=frozenset({2, 3}))
    module = _module(tmp_path, "validate", eval_batch_size=2)
    loader = module.val_dataloader()
    batches = [batch["keys"] for batch in loader]
    assert batches == [[key_of(0), key_of(1)], [key_of(0), key_of(1)], [key_of(4), key_of(5)]]
    assert loader.skipped["batch-repeated"] == 1 and sum(loader.skipped.values()) == 3
    assert module.skipped_counts("validate") == loader.skipped

    write_split(tmp_path / "first", "validate", [4], corrupt=frozenset({0, 1}))
    with pytest.raises(RuntimeError, match="no earlier batch to repeat"):
        list(_module(tmp_path / "first", "validate", eval_batch_size=2).val_dataloader())


def test_fast_tar_index_matches_tarfile_and_falls_back(shard_dir, tmp_path):
    import io
    import tarfile

    from datamodules.shard_reader import tar_members

    for path in sorted((shard_dir / "train").glob("*.tar")):
        with tarfile.open(path) as tar:
            assert tar_members(path) == [(i.name, i.offset_data, i.size) for i in tar if i.isfile()]
    odd = tmp_path / "pax.tar"
    with tarfile.open(odd, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ["k" * 150 + ".jpg", "clé.txt"]:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    assert [(name, size) for name, _, size in tar_members(odd)] == [("k" * 150 + ".jpg", 3), ("clé.txt", 3)]


class _BrokenBuilder:
    """An example builder with a bug (a key that does not exist): picklable, like the real ones."""

    def __call__(self, sample, rng):
        return {"pixel_values": sample.json("json")["no-such-field"]}


def test_a_bug_in_an_example_builder_raises_instead_of_becoming_a_counted_skip(tmp_path):
    write_split(tmp_path, "train", [6])
    module = _module(tmp_path, batch_size=3)
    module.example_fn = lambda split, train: _BrokenBuilder()
    with pytest.raises(KeyError, match="no-such-field"):
        next(iter(module.train_dataloader()))
