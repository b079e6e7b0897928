"""CXR image pipeline: letterbox (no crop), seeded augmentation, never a horizontal flip, value ranges."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.transforms import Augment, ImagePipeline, decode_grey, square_grey

STRONG = Augment(rotation_degrees=8.0, zoom=0.08, shift=0.05, brightness=0.15, contrast=0.15)


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _left_bright(height: int = 100, width: int = 80) -> np.ndarray:
    """Bright patient-left half... as stored: bright on the image's left side, dark on its right."""
    pixels = np.full((height, width), 40, dtype=np.uint8)
    pixels[:, : width // 2] = 220
    return pixels


def test_letterbox_keeps_the_whole_image_and_pads_black():
    grey = square_grey(Image.fromarray(np.full((100, 80), 200, dtype=np.uint8)), 50)
    assert grey.shape == (50, 50)
    assert grey[:, 8:42].mean() > 195, "the whole portrait image fits: nothing is cropped"
    assert grey[:, :3].max() < 5 and grey[:, -3:].max() < 5, "the sides are black padding"


def test_draft_decoding_keeps_enough_resolution():
    image = decode_grey(_jpeg(np.full((512, 410), 128)), 224)
    assert max(image.size) >= 224 and image.mode == "L"
    assert max(image.size) < 512, "libjpeg should decode at a reduced scale for a 224 px target"


def test_augmentation_is_seeded_and_never_flips():
    jpeg = _jpeg(_left_bright())
    pipeline = ImagePipeline(64, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), augment=STRONG)
    first = pipeline(jpeg, np.random.default_rng(5))
    assert torch.equal(first, pipeline(jpeg, np.random.default_rng(5))), "same seed, same pixels (exact resume)"
    assert not torch.equal(first, pipeline(jpeg, np.random.default_rng(6)))
    for seed in range(30):
        image = pipeline(jpeg, np.random.default_rng(seed))[0]
        left, right = image[16:48, 14:28].mean(), image[16:48, 36:50].mean()
        assert left > right + 0.3, f"seed {seed}: left and right anatomy swapped"


def test_no_augmentation_without_training_and_ranges():
    jpeg = _jpeg(_left_bright())
    plain = ImagePipeline(32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert torch.equal(plain(jpeg, None), plain(jpeg, np.random.default_rng(1)))
    signed = ImagePipeline(32, augment=STRONG, mode="signed")(jpeg, np.random.default_rng(2))
    assert signed.shape == (3, 32, 32) and signed.min() >= -1.0 and signed.max() <= 1.0
    assert ImagePipeline(32, mode="signed")(jpeg, None).min() == -1.0, "the black letterbox maps to -1"
    with pytest.raises(ValueError, match="mode"):
        ImagePipeline(32, mode="clip")
