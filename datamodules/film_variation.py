"""Real-film variation for training the view classifier on renders and using it on real radiographs.

Our built-in CXRs are clean renders; real films (MIMIC-CXR-JPG, IU X-ray) differ in ways a view
classifier must ignore: exposure and display curves, MIMIC-CXR-JPG's histogram equalisation,
collimation borders and off-centre crops, burned-in side markers, text and arrows. Each of these
is drawn at random per sample (seeded, so exact resume still holds). Colour inputs (RGB, RGBA,
16-bit) need nothing here: decoding converts every image to 8-bit grey first.

None of these changes anatomy or side: markers are text and never mirror the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageOps

MARKER_TEXTS: tuple[str, ...] = ("L", "R", "PORTABLE", "UPRIGHT", "SUPINE", "AP", "PA", "LAT", "SEMI-ERECT", "1")


@dataclass(frozen=True)
class FilmVariation:
    """Probabilities and ranges of each real-film effect (all drawn per sample).

    Attributes:
        gamma: display gamma drawn log-uniformly in [1/gamma, gamma].
        equalize_prob: probability of histogram equalisation (as MIMIC-CXR-JPG applies to every image).
        collimation_prob: probability of black or white bands on up to all four edges.
        crop: maximum fraction cut from each edge (off-centre and tight field of view).
        marker_prob: probability of burned-in text markers and an arrow.
        invert_prob: probability of an inverted display (a few archives store MONOCHROME1 un-inverted).
    """

    gamma: float = 1.6
    equalize_prob: float = 0.5
    collimation_prob: float = 0.3
    crop: float = 0.08
    marker_prob: float = 0.4
    invert_prob: float = 0.02


def _gamma(image: Image.Image, rng: np.random.Generator, limit: float) -> Image.Image:
    gamma = float(np.exp(rng.uniform(-np.log(limit), np.log(limit))))
    table = [min(255, round(255 * (i / 255) ** gamma)) for i in range(256)]
    return image.point(table)


def _crop(image: Image.Image, rng: np.random.Generator, limit: float) -> Image.Image:
    w, h = image.size
    left, right = (int(w * rng.uniform(0, limit)) for _ in range(2))
    top, bottom = (int(h * rng.uniform(0, limit)) for _ in range(2))
    return image.crop((left, top, max(left + 8, w - right), max(top + 8, h - bottom)))


def _collimate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    draw = ImageDraw.Draw(image)
    fill = 0 if rng.random() < 0.7 else 255
    for edge in range(4):
        if rng.random() < 0.5:
            continue
        depth = rng.uniform(0.02, 0.12)
        if edge == 0:
            draw.rectangle((0, 0, w, int(h * depth)), fill=fill)
        elif edge == 1:
            draw.rectangle((0, h - int(h * depth), w, h), fill=fill)
        elif edge == 2:
            draw.rectangle((0, 0, int(w * depth), h), fill=fill)
        else:
            draw.rectangle((w - int(w * depth), 0, w, h), fill=fill)
    return image


def _markers(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):
        text = MARKER_TEXTS[int(rng.integers(len(MARKER_TEXTS)))]
        x, y = int(rng.uniform(0.02, 0.8) * w), int(rng.uniform(0.02, 0.9) * h)
        size = max(8, int(rng.uniform(0.03, 0.08) * h))
        draw.text((x, y), text, fill=255, font_size=size)
    if rng.random() < 0.5:  # an arrow: a shaft and a head
        x0, y0 = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.05, 0.15) * min(w, h)
        x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
        width = max(1, int(0.006 * min(w, h)))
        draw.line((x0, y0, x1, y1), fill=255, width=width)
        for side in (-0.5, 0.5):
            hx, hy = x1 - 0.3 * length * np.cos(angle + side), y1 - 0.3 * length * np.sin(angle + side)
            draw.line((x1, y1, hx, hy), fill=255, width=width)
    return image


def apply_film_variation(image: Image.Image, rng: np.random.Generator, options: FilmVariation) -> Image.Image:
    """One random real-film look for an 8-bit grey ("L") image; returns a new image."""
    if image.mode != "L":
        raise ValueError(f"apply_film_variation expects an 8-bit grey ('L') image, got mode {image.mode!r}")
    image = image.copy()
    if options.crop > 0:
        image = _crop(image, rng, options.crop)
    if rng.random() < options.equalize_prob:
        image = ImageOps.equalize(image)
    if options.gamma > 1.0:
        image = _gamma(image, rng, options.gamma)
    if rng.random() < options.collimation_prob:
        image = _collimate(image, rng)
    if rng.random() < options.marker_prob:
        image = _markers(image, rng)
    if rng.random() < options.invert_prob:
        image = ImageOps.invert(image)
    return image
