"""Real-film variation: seeded (exact resume holds), grey in and out, and each effect actually happens."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datamodules.film_variation import FilmVariation, apply_film_variation


def _cxr_like(size: int = 96) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size] / size
    lungs = np.exp(-(((x - 0.3) / 0.12) ** 2 + ((y - 0.45) / 0.25) ** 2)) + np.exp(
        -(((x - 0.7) / 0.12) ** 2 + ((y - 0.45) / 0.25) ** 2)
    )
    return Image.fromarray((200 - 150 * np.clip(lungs, 0, 1)).astype(np.uint8), mode="L")


def test_same_seed_same_film_and_seeds_differ() -> None:
    image, options = _cxr_like(), FilmVariation()
    first = apply_film_variation(image, np.random.default_rng(7), options)
    again = apply_film_variation(image, np.random.default_rng(7), options)
    other = apply_film_variation(image, np.random.default_rng(8), options)
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()
    assert first.mode == "L"


def test_markers_burn_in_bright_text_and_collimation_adds_bands() -> None:
    image = _cxr_like()
    marked = apply_film_variation(
        image, np.random.default_rng(1), FilmVariation(gamma=1.0, equalize_prob=0, collimation_prob=0, crop=0,
                                                       marker_prob=1.0, invert_prob=0)
    )
    assert (np.asarray(marked) == 255).sum() > 0 and (np.asarray(image) == 255).sum() == 0
    collimated = [
        apply_film_variation(image, np.random.default_rng(seed), FilmVariation(
            gamma=1.0, equalize_prob=0, collimation_prob=1.0, crop=0, marker_prob=0, invert_prob=0))
        for seed in range(8)
    ]
    assert any(((np.asarray(c) == 0) | (np.asarray(c) == 255)).mean() > 0.02 for c in collimated)


def test_crop_never_exceeds_its_limit() -> None:
    image = _cxr_like(100)
    options = FilmVariation(gamma=1.0, equalize_prob=0, collimation_prob=0, crop=0.1, marker_prob=0, invert_prob=0)
    for seed in range(10):
        out = apply_film_variation(image, np.random.default_rng(seed), options)
        assert 80 <= out.width <= 100 and 80 <= out.height <= 100


def test_colour_images_are_refused_with_the_mode_named() -> None:
    with pytest.raises(ValueError, match="RGB"):
        apply_film_variation(Image.new("RGB", (8, 8)), np.random.default_rng(0), FilmVariation())
