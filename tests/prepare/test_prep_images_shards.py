"""Image conversion (bad inputs become conversions or named skips) and deterministic shard tars."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image
from prep_fixtures import cxr_pixels

from datamodules.shards import FIXED_MTIME, ShardInfo, ShardWriter, build_manifest, file_sha256
from datamodules.sources.images import ImageError, encode_cxr_image, target_size


def _decoded(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG"
    return image


def test_resize_keeps_aspect_and_longest_side(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(cxr_pixels(0, (300, 400))).save(path, quality=95)
    encoded = encode_cxr_image(path, 64)
    image = _decoded(encoded.jpeg)
    assert image.mode == "L" and image.size == (48, 64)
    assert encoded.original_size == (300, 400) and encoded.conversions == ()
    assert target_size(2544, 3056, 512) == (426, 512)


@pytest.mark.parametrize(
    ("writer", "name", "conversion"),
    [
        (lambda p: Image.fromarray(cxr_pixels(1, (80, 60))).save(p, format="PNG"), "png.jpg", "png-under-jpg-name"),
        (lambda p: Image.new("RGBA", (80, 60), (10, 200, 30, 128)).save(p), "rgba.png", "alpha-dropped"),
        (
            lambda p: Image.fromarray((np.arange(4800).reshape(60, 80) * 13 % 65535).astype(np.uint16)).save(p),
            "deep.png",
            "16-bit-to-8-bit",
        ),
        (lambda p: Image.new("RGB", (80, 60), (90, 90, 90)).save(p, quality=95), "rgb.jpg", "colour-to-grey"),
    ],
)
def test_unusual_images_are_converted_and_reported(tmp_path, writer, name, conversion):
    path = tmp_path / name
    writer(path)
    encoded = encode_cxr_image(path, 40)
    assert conversion in encoded.conversions
    image = _decoded(encoded.jpeg)
    assert image.mode == "L" and max(image.size) == 40


def test_sixteen_bit_range_is_stretched_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    ramp = np.tile(np.linspace(1000, 4000, 64).astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(path)
    pixels = np.asarray(_decoded(encode_cxr_image(path, 64).jpeg), dtype=np.int32)
    assert pixels[:, :4].mean() < 10 and pixels[:, -4:].mean() > 245


def test_bad_images_raise_named_reasons(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(cxr_pixels(2, (200, 200))).save(good, quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    cases = {truncated: "truncated-image", corrupt: "corrupt-image", empty: "corrupt-image"}
    cases[tmp_path / "missing.jpg"] = "missing-image"
    for path, reason in cases.items():
        with pytest.raises(ImageError) as caught:
            encode_cxr_image(path, 64)
        assert caught.value.reason == reason, path
        assert str(path) in caught.value.detail


def _write(directory, samples):
    writer = ShardWriter(directory, 3)
    for key, members in samples:
        writer.write(key, members)
    assert (directory / "shard-000003.tar.partial").exists() and not (directory / "shard-000003.tar").exists()
    return writer.close()


def test_shard_bytes_are_deterministic_and_readable(tmp_path):
    samples = [(f"key-{i}", {"jpg": bytes([i]) * 10, "txt": b"text", "conv.json": b"{}"}) for i in range(3)]
    first = _write(tmp_path / "a", samples)
    second = _write(tmp_path / "b", samples)
    assert first.sha256 == second.sha256 == file_sha256(tmp_path / "a" / "shard-000003.tar")
    assert first.num_samples == 3 and first.name == "shard-000003.tar"
    assert not (tmp_path / "a" / "shard-000003.tar.partial").exists()
    with tarfile.open(tmp_path / "a" / "shard-000003.tar") as archive:
        members = archive.getmembers()
    assert [m.name for m in members][:3] == ["key-0.jpg", "key-0.txt", "key-0.conv.json"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(FIXED_MTIME, 0, 0, "", "")}


def test_shard_writer_refuses_unusable_keys_and_writes_nothing_when_empty(tmp_path):
    writer = ShardWriter(tmp_path, 0)
    with pytest.raises(ValueError, match="a.b"):
        writer.write("a.b", {"jpg": b""})
    assert writer.close() is None and not any(tmp_path.iterdir())
    writer = ShardWriter(tmp_path, 1)
    writer.write("k", {"jpg": b"1"})
    with pytest.raises(ValueError, match="twice"):
        writer.write("k", {"jpg": b"1"})
    writer.abort()
    assert not any(tmp_path.iterdir())


def test_manifest_counts_come_from_the_shards_and_skips():
    shards = [ShardInfo("shard-000000.tar", 4, "a"), ShardInfo("shard-000001.tar", 2, "b")]
    skipped = [{"item": "x.jpg", "reason": "corrupt-image", "detail": ""}] * 2
    manifest = build_manifest(
        split="train", shards=shards, skipped=skipped, converted_by_reason={}, dialogue_stats={}, source={}, options={}
    )
    assert manifest["num_samples"] == 6 and manifest["skipped_by_reason"] == {"corrupt-image": 2}
    assert json.loads(json.dumps(manifest)) == manifest
