"""Uploads are decoded by content into the 8-bit grey the model was trained on, or refused with a message
naming the file; the size limit is checked before decoding."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lit_medxchat.serve.uploads import UploadError, decode_upload, decode_uploads


def test_16_bit_png_is_min_max_scaled_to_8_bit(tmp_path):
    path = tmp_path / "film.png"
    ramp = np.linspace(1000, 41000, 64 * 32).reshape(32, 64).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    cxr = decode_upload(path)
    pixels = np.asarray(cxr.image)
    assert cxr.image.mode == "L" and cxr.original_size == (64, 32) and cxr.source_format == "PNG"
    assert "16-bit-to-8-bit" in cxr.conversions
    assert pixels[0, 0] <= 2 and pixels[-1, -1] >= 253  # the full range is used, not clipped at 255 of 65535


def test_rgba_png_under_a_jpg_name_is_read_by_content(tmp_path):
    path = tmp_path / "scan.jpg"
    Image.new("RGBA", (40, 50), (200, 200, 200, 128)).save(path, format="PNG")
    cxr = decode_upload(path)
    assert cxr.source_format == "PNG" and cxr.image.size == (40, 50)
    assert {"alpha-dropped", "png-under-jpg-name"} <= set(cxr.conversions)
    assert abs(int(np.asarray(cxr.image).mean()) - 200) <= 2


def test_bad_files_are_refused_with_their_name(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "report.txt"
    text.write_text("findings: none")
    good = tmp_path / "good.png"
    Image.new("L", (30, 20), 90).save(good)
    whole, truncated = tmp_path / "whole.jpg", tmp_path / "cut.jpg"
    Image.fromarray((np.random.default_rng(0).random((200, 200)) * 255).astype(np.uint8)).save(whole)
    truncated.write_bytes(whole.read_bytes()[:2000])
    with pytest.raises(UploadError, match="empty.png is empty"):
        decode_upload(empty)
    with pytest.raises(UploadError, match="report.txt is not an image"):
        decode_upload(text)
    with pytest.raises(UploadError, match="cut.jpg is truncated"):
        decode_upload(truncated)
    with pytest.raises(UploadError, match=r"good.png is 30 x 20 pixels, more than the limit"):
        decode_upload(good, max_pixels=500)
    images, problems = decode_uploads([(text, "report.txt"), (good, "good.png")])
    assert [cxr.name for cxr in images] == ["good.png"] and len(problems) == 1


def test_more_views_than_the_model_reads_are_all_refused(tmp_path):
    path = tmp_path / "a.png"
    Image.new("L", (16, 16), 50).save(path)
    images, problems = decode_uploads([(path, f"{i}.png") for i in range(3)], max_images=2)
    assert images == [] and "remove 1" in problems[0]
