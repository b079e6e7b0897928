"""Shards behind URLs: a real HTTP server on 127.0.0.1 (Range support, scripted faults), `pipe:` and webdataset.

Streaming must give the same batches as the local folder for the same plan, resume exactly, survive dropped
connections, stop with a useful error when the server stays down or a shard disagrees with its manifest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import time

import pytest
import torch
from dm_shards import key_of, write_split
from http_shards import ShardServer

from datamodules.classifier import ClassifierDataModule
from datamodules.manifest import load_manifest
from datamodules.remote import ShardLocation, ShardReadError, is_remote
from datamodules.shard_cache import ShardCache
from datamodules.shard_reader import ShardMismatchError, ShardReader
from datamodules.streaming import iter_samples

torch.set_num_threads(1)


def _module(data_dir, **options) -> ClassifierDataModule:
    options = {"batch_size": 4, "num_workers": 0, "image_size": 16, "shuffle_window": 8, "retry_backoff": 0.01,
               **options}
    module = ClassifierDataModule(str(data_dir), **options)
    module.setup("fit")
    return module


def _epochs(module: ClassifierDataModule, epochs=(0, 1)) -> list[list[tuple[list[str], torch.Tensor]]]:
    loader = module.train_dataloader()
    result = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        result.append([(batch["keys"], batch["pixel_values"]) for batch in loader])
    return result


def _assert_same(a, b) -> None:
    assert [[keys for keys, _ in epoch] for epoch in a] == [[keys for keys, _ in epoch] for epoch in b]
    for epoch_a, epoch_b in zip(a, b, strict=True):
        for (_, pixels_a), (_, pixels_b) in zip(epoch_a, epoch_b, strict=True):
            assert torch.equal(pixels_a, pixels_b), "the same samples must give bitwise the same pixels"


def test_locations_are_told_apart_and_expanded():
    assert is_remote("http://h/x") and is_remote("s3://b/p") and is_remote("pipe:cat {shard}")
    assert not is_remote("data/shards") and not is_remote("file:///data/shards")
    mirrors = ShardLocation.parse("http://node{1..2}:80/shards")
    assert mirrors.url("train/a.tar") == "http://node1:80/shards/train/a.tar"
    assert mirrors.url("train/a.tar", choice=3) == "http://node2:80/shards/train/a.tar"
    assert ShardLocation.parse("pipe:aws s3 cp s3://b/{shard} -").url("train/manifest.json") == (
        "pipe:aws s3 cp s3://b/train/manifest.json -")
    with pytest.raises(ValueError, match=r"must hold \{shard\}"):
        ShardLocation.parse("pipe:cat /data/shards")


@pytest.mark.parametrize("lanes,workers", [(1, 0), (2, 2), (3, 2)])
def test_http_gives_the_local_folders_batches(shard_dir, lanes, workers):
    reference = _epochs(_module(shard_dir, lanes=lanes))
    with ShardServer(shard_dir) as server:
        streamed = _epochs(_module(server.url, lanes=lanes, num_workers=workers))
        if lanes == 2 and workers == 2:  # one worker per lane: every shard is fetched once per epoch and rank
            shard_requests = [name for name, _ in server.requests if name.endswith(".tar")]
            assert len(shard_requests) <= 2 * (4 + 2), shard_requests  # 4 shards + at most 2 split by a lane
    _assert_same(streamed, reference)
    assert len(reference[0]) == 37 // 4


def test_lanes_default_to_the_workers_for_urls_and_stay_one_for_folders(shard_dir):
    assert ClassifierDataModule(str(shard_dir), num_workers=2).lanes == 1
    assert ClassifierDataModule("http://127.0.0.1:9/shards", num_workers=2).lanes == 2  # nothing read before setup
    assert ClassifierDataModule("http://127.0.0.1:9/shards", num_workers=2, lanes=4).lanes == 4


def test_resume_over_http_is_exact_with_another_worker_count(shard_dir):
    with ShardServer(shard_dir) as server:
        uninterrupted = [keys for keys, _ in _epochs(_module(server.url, num_workers=2), epochs=(1,))[0]]
        loader = _module(server.url, num_workers=2).train_dataloader()
        loader.set_epoch(1)
        iterator = iter(loader)
        first = [next(iterator)["keys"] for _ in range(3)]
        state = loader.state_dict()
        del iterator
        assert state["ranks"][0]["lanes"] == 2
        fresh = _module(server.url, num_workers=0).train_dataloader()  # lanes would default to 1 here
        fresh.load_state_dict(state)
        fresh.set_epoch(1)
        rest = [batch["keys"] for batch in fresh]
    assert fresh.dataset.lanes == 2, "the checkpoint's lanes are kept"
    assert first + rest == uninterrupted


def test_pipe_template_reads_the_same_batches(shard_dir):
    reference = _epochs(_module(shard_dir, lanes=2))
    _assert_same(_epochs(_module(f"pipe:cat {shard_dir}/{{shard}}", lanes=2, num_workers=2)), reference)


def test_a_connection_dropped_mid_shard_is_resumed_at_that_byte(shard_dir, caplog):
    reference = _epochs(_module(shard_dir, lanes=2), epochs=(0,))
    with ShardServer(shard_dir, drop_after=20_000) as server:  # every shard response is cut after 20 kB
        streamed = _epochs(_module(server.url, lanes=2), epochs=(0,))
        ranged = {name for name, start in server.requests if name.endswith(".tar") and start > 0}
    _assert_same(streamed, reference)  # and every shard read to its end matched its sha256
    assert ranged == {f"shard-{i:06d}.tar" for i in range(4)}, "retries continue at the byte reached (Range)"
    assert "read failed at byte" in caplog.text


def test_without_range_support_the_delivered_bytes_are_skipped(shard_dir):
    reference = _epochs(_module(shard_dir, lanes=2), epochs=(0,))
    with ShardServer(shard_dir, drop_after=25_000, ranges=False, drops=2) as server:
        streamed = _epochs(_module(server.url, lanes=2), epochs=(0,))
        shard_requests = [name for name, _ in server.requests if name.endswith(".tar")]
    _assert_same(streamed, reference)
    assert shard_requests.count(shard_requests[0]) >= 3, "the cut shard was read again from byte 0, twice"


def test_a_server_that_stays_down_stops_the_run_naming_url_and_offset(shard_dir):
    with ShardServer(shard_dir, die_after=10_000) as server:
        module = _module(server.url, lanes=1, retries=2)
        started = time.monotonic()
        with pytest.raises(ShardReadError) as error:
            _epochs(module, epochs=(0,))
    message = str(error.value)
    assert f"{server.url}/train/shard-" in message and "at byte 10000 after 2 retries" in message
    assert time.monotonic() - started < 30


def test_a_shard_that_disagrees_with_its_manifest_stops_the_run(shard_dir, tmp_path):
    root = tmp_path / "shards"
    shutil.copytree(shard_dir, root)
    manifest_path = root / "train" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["shards"][1]["sha256"] = hashlib.sha256(b"other bytes").hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    with ShardServer(root) as server, pytest.raises(ShardMismatchError, match=r"shard-000001\.tar has sha256"):
        _epochs(_module(server.url, lanes=1, shuffle_window=1), epochs=(0,))

    manifest["shards"][1]["sha256"] = None
    manifest["shards"][1]["num_samples"] = 11
    manifest["num_samples"] = 38
    manifest_path.write_text(json.dumps(manifest))
    with ShardServer(root) as server, pytest.raises(ShardMismatchError, match=r"shard-000001\.tar holds 10 samples"):
        _epochs(_module(server.url, lanes=1), epochs=(0,))


def test_corrupt_samples_in_a_streamed_shard_are_skipped_and_counted(tmp_path):
    write_split(tmp_path, "train", [6, 6], image_size=32, corrupt=frozenset({2, 9}))
    with ShardServer(tmp_path) as server:
        loader = _module(server.url, batch_size=3, lanes=2).train_dataloader()
        seen = [key for batch in loader for key in batch["keys"]]
    assert loader.skipped == {"decode-error-UnidentifiedImageError": 2}
    assert len(seen) == 10 and key_of(2) not in seen and key_of(9) not in seen


def test_webdataset_reads_our_shards_with_the_same_keys_and_bytes(shard_dir):
    import webdataset as wds

    manifest = load_manifest(shard_dir, "validate")
    reader = ShardReader(manifest)
    ours = [reader.read(s, o) for s in range(len(manifest.shards)) for o in range(manifest.shards[s].num_samples)]
    with ShardServer(shard_dir) as server:
        urls = [f"{server.url}/validate/{shard.name}" for shard in manifest.shards]
        theirs = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
        streamed = list(iter_samples(f"{server.url}", "validate"))
    assert [sample["__key__"] for sample in theirs] == [sample.key for sample in ours]
    for their, our, again in zip(theirs, ours, streamed, strict=True):
        assert {ext: their[ext] for ext in our.members} == our.members == again.members


def test_the_cache_serves_epoch_two_from_disk_and_never_uses_half_downloads(shard_dir, tmp_path):
    cache = tmp_path / "cache"
    reference = _epochs(_module(shard_dir, lanes=2))
    with ShardServer(shard_dir, die_after=5_000) as server:  # the first download breaks, then the server is gone
        with pytest.raises(ShardReadError):
            _epochs(_module(server.url, lanes=2, retries=0, cache_dir=str(cache)), epochs=(0,))
    assert not list(cache.glob("*.tar")), "a broken download never becomes a cache entry"
    assert not list(cache.glob("*.partial")), "its partial file is removed"

    with ShardServer(shard_dir) as server:
        module = _module(server.url, lanes=2, cache_dir=str(cache))
        streamed = _epochs(module)
        shard_requests = [name for name, _ in server.requests if name.endswith(".tar")]
    _assert_same(streamed, reference)
    assert sorted(shard_requests) == [f"shard-{i:06d}.tar" for i in range(4)], "each shard downloaded once"
    assert len(list(cache.glob("*.tar"))) == 4


def test_the_cache_evicts_least_recently_used_shards_beyond_its_size(shard_dir, tmp_path):
    shard_bytes = (shard_dir / "train" / "shard-000000.tar").stat().st_size
    cache = ShardCache(tmp_path, int(2.5 * shard_bytes))
    with ShardServer(shard_dir) as server:
        manifest = load_manifest(server.url, "train")
        for index in (0, 1, 2):
            cache.fetch(manifest, index)
            time.sleep(0.01)  # distinct mtimes
    kept = sorted(path.name.split("-", 1)[1] for path in tmp_path.glob("*.tar"))
    assert kept == ["shard-000001.tar", "shard-000002.tar"]


def test_tokenizer_corpus_reads_a_url(shard_dir):
    from datamodules.tokenizer_cli import corpus_from_shards

    with ShardServer(shard_dir) as server:
        assert list(corpus_from_shards(server.url, "validate")) == list(corpus_from_shards(shard_dir, "validate"))


def test_multi_view_over_a_url_needs_the_cache(shard_dir, tokenizer_dir, tmp_path):
    from datamodules.chat import ChatDataModule

    options = {"batch_size": 2, "num_workers": 0, "image_size": 16, "num_image_tokens": 2, "multi_view": True}
    with ShardServer(shard_dir) as server:
        module = ChatDataModule(server.url, str(tokenizer_dir), **options)
        module.setup("fit")
        with pytest.raises(ValueError, match="set cache_dir"):
            module.train_dataloader()
        cached = ChatDataModule(server.url, str(tokenizer_dir), cache_dir=str(tmp_path), **options)
        cached.setup("fit")
        local = ChatDataModule(str(shard_dir), str(tokenizer_dir), **options)
        local.setup("fit")
        batch, reference = next(iter(cached.train_dataloader())), next(iter(local.train_dataloader()))
    assert batch["keys"] == reference["keys"] and torch.equal(batch["pixel_values"], reference["pixel_values"])
    assert torch.equal(batch["image_mask"], reference["image_mask"])


def test_a_missing_manifest_names_the_url(tmp_path):
    (tmp_path / "train").mkdir()
    with ShardServer(tmp_path) as server, pytest.raises(FileNotFoundError, match="train/manifest.json"):
        _module(server.url, retries=0)


def test_a_dead_mirror_of_a_brace_list_is_passed_over(shard_dir):
    reference = _epochs(_module(shard_dir, lanes=2), epochs=(0,))
    with ShardServer(shard_dir) as server:
        with socket.socket() as sock:  # bound, then closed: its port refuses connections
            sock.bind(("127.0.0.1", 0))
            dead_port = sock.getsockname()[1]
        mirrors = f"http://127.0.0.1:{{{dead_port},{server.port}}}"
        streamed = _epochs(_module(mirrors, lanes=2), epochs=(0,))
        served = {name for name, _ in server.requests if name.endswith(".tar")}
    _assert_same(streamed, reference)
    assert served == {f"shard-{i:06d}.tar" for i in range(4)}, "the live mirror served every shard"


def test_shards_written_by_prepare_are_plain_webdataset(tmp_path):
    import webdataset as wds

    from datamodules.shards import ShardWriter

    writer = ShardWriter(tmp_path, 0)
    members = {f"k{i}": {"jpg": bytes([i]) * 700, "txt": f"report {i}".encode(), "conv.json": b"{}"} for i in range(3)}
    for key, sample in members.items():
        writer.write(key, sample)
    info = writer.close()
    with ShardServer(tmp_path) as server:
        theirs = list(wds.WebDataset(f"{server.url}/{info.name}", shardshuffle=False, empty_check=False))
    assert [sample["__key__"] for sample in theirs] == list(members)
    assert [{ext: sample[ext] for ext in ("jpg", "txt", "conv.json")} for sample in theirs] == list(members.values())
