"""Image decoding and CXR-appropriate augmentation with PIL and numpy (no torchvision).

- Letterbox, never crop: images are scaled so the longest side fits and padded with black to a square.
  A centre crop of a portrait CXR cuts the apices or the costophrenic angles, where effusions and
  pneumothoraces show; stretching would change the cardiothoracic ratio.
- Augmentation: small rotation, zoom and shift (one affine resampling) and brightness/contrast jitter,
  which mimic patient positioning and exposure. **No horizontal flip**: it swaps left and right anatomy
  (heart on the right, "left pleural effusion" now on the right) and the report or labels would lie.
- JPEG decoding uses libjpeg's DCT scaling (`Image.draft`) when the target is at most half the stored
  size: decoding at 1/2, 1/4 or 1/8 resolution is several times faster and a good low-pass filter.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from datamodules.film_variation import FilmVariation, apply_film_variation
from datamodules.shard_reader import decode_member

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Augment:
    """Ranges of the random CXR augmentation (each drawn uniformly per sample).

    Attributes:
        rotation_degrees: maximum absolute rotation, degrees.
        zoom: maximum relative zoom in or out (0.05 = scale in [0.95, 1.05]).
        shift: maximum shift as a fraction of the output size.
        brightness: maximum additive brightness change, fraction of full scale.
        contrast: maximum relative contrast change around the image mean.
    """

    rotation_degrees: float = 5.0
    zoom: float = 0.05
    shift: float = 0.03
    brightness: float = 0.1
    contrast: float = 0.1


def decode_grey(jpeg: bytes, size: int | None = None) -> Image.Image:
    """Decode an image to 8-bit grey ("L"); with `size`, let libjpeg shrink it while keeping longest side >= size."""
    image = Image.open(io.BytesIO(jpeg))
    if size is not None and image.format == "JPEG":
        width, height = image.size
        longest = max(width, height)
        image.draft("L", (math.ceil(size * width / longest), math.ceil(size * height / longest)))
    image.load()  # decode now: a damaged file fails here, not in a later resize
    return image.convert("L") if image.mode != "L" else image


def square_grey(
    image: Image.Image, size: int, rng: np.random.Generator | None = None, augment: Augment | None = None
) -> np.ndarray:
    """Letterbox `image` into a `size` x `size` uint8 array, applying a random affine when `augment` is given.

    One bilinear resampling does the resize, rotation, zoom and shift; images more than 1.5x the target are
    first shrunk with an antialiasing filter so the affine never aliases.
    """
    if max(image.size) > 1.5 * size:
        scale = size / max(image.size)
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.BILINEAR,
            reducing_gap=2.0,
        )
    if augment is None:  # plain letterbox: a separable resize is several times cheaper than an affine warp
        scale = size / max(image.size)
        width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        canvas = Image.new("L", (size, size), 0)
        canvas.paste(image.resize((width, height), Image.Resampling.BILINEAR), ((size - width) // 2,
                                                                             (size - height) // 2))
        return np.asarray(canvas, dtype=np.uint8)
    angle, zoom, shift_x, shift_y = 0.0, 1.0, 0.0, 0.0
    if augment is not None:
        if rng is None:
            raise ValueError("square_grey: augment needs an rng (seeded per sample for exact resume)")
        angle = math.radians(rng.uniform(-augment.rotation_degrees, augment.rotation_degrees))
        zoom = rng.uniform(1.0 - augment.zoom, 1.0 + augment.zoom)
        shift_x, shift_y = rng.uniform(-augment.shift, augment.shift, size=2) * size
    scale = size / max(image.size) * zoom
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    # PIL maps each output pixel (x, y) to the input pixel (a x + b y + c, d x + e y + f).
    out_cx, out_cy = size / 2 + shift_x, size / 2 + shift_y
    in_cx, in_cy = image.width / 2, image.height / 2
    coefficients = (
        cos,
        sin,
        in_cx - cos * out_cx - sin * out_cy,
        -sin,
        cos,
        in_cy + sin * out_cx - cos * out_cy,
    )
    out = image.transform((size, size), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR, fillcolor=0)
    return np.asarray(out, dtype=np.uint8)


def intensity_jitter(
    pixels: np.ndarray, rng: np.random.Generator | None = None, augment: Augment | None = None
) -> tuple[float, float]:
    """(gain, offset) mapping uint8 grey to [0, 1] as `pixels * gain + offset`, with brightness/contrast jitter.

    Contrast scales around the image's mean grey level; brightness adds a fraction of full scale. Without
    `augment` this is the plain 1/255 scaling.
    """
    if augment is None:
        return 1.0 / 255.0, 0.0
    if rng is None:
        raise ValueError("intensity_jitter: augment needs an rng (seeded per sample for exact resume)")
    contrast = rng.uniform(1.0 - augment.contrast, 1.0 + augment.contrast)
    brightness = rng.uniform(-augment.brightness, augment.brightness)
    mean = float(pixels.mean()) / 255.0
    return contrast / 255.0, mean * (1.0 - contrast) + brightness


def to_rgb(
    pixels: np.ndarray, gain: float, offset: float, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """uint8 grey (H, W) -> float (3, H, W): clip(pixels * gain + offset, 0, 1), then (x - mean) / std per channel.

    The grey image is replicated to the three channels RGB backbones expect.
    """
    unit = pixels.astype(np.float32)
    unit *= np.float32(gain)
    unit += np.float32(offset)
    np.clip(unit, 0.0, 1.0, out=unit)
    out = np.empty((3, *pixels.shape), dtype=np.float32)
    for channel, (m, s) in enumerate(zip(mean, std, strict=True)):
        np.multiply(unit, np.float32(1.0 / s), out=out[channel])
        out[channel] -= np.float32(m / s)
    return torch.from_numpy(out)


@dataclass(frozen=True)
class ImagePipeline:
    """JPEG bytes -> tensor (3, size, size): decode, letterbox, optional augmentation, then `mode`.

    `mode="normalize"` applies `mean`/`std` (classifiers, CLIP); `mode="signed"` maps to [-1, 1] (SD VAE).
    """

    size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    augment: Augment | None = None
    mode: str = "normalize"
    film: FilmVariation | None = None  # real-film looks (training only, like `augment`)

    def __post_init__(self) -> None:
        if self.mode not in ("normalize", "signed"):
            raise ValueError(f"ImagePipeline mode must be 'normalize' or 'signed', got {self.mode!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"image mean/std need 3 values (RGB), got {self.mean} / {self.std}")

    def __call__(self, jpeg: bytes, rng: np.random.Generator | None) -> torch.Tensor:
        image = decode_member(lambda data: decode_grey(data, self.size), jpeg)  # damaged: a counted skip
        if self.film is not None and rng is not None:
            image = apply_film_variation(image, rng, self.film)
        grey = square_grey(image, self.size, rng, self.augment)
        gain, offset = intensity_jitter(grey, rng, self.augment)
        if self.mode == "signed":  # [-1, 1]: (x - 0.5) / 0.5
            return to_rgb(grey, gain, offset, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        return to_rgb(grey, gain, offset, self.mean, self.std)
