"""Decode a source radiograph into the shard image: 8-bit grey, longest side `image_size`, JPEG q95.

Shared by every source. MIMIC-CXR-JPG originals are ~2500x3000 JPEGs; a reduced-size decode
(`Image.draft`, libjpeg's DCT scaling by 1/2, 1/4 or 1/8) gives an image at least as large as
the target for a fraction of the full decode, and a Lanczos resize finishes the job.
Anything unusual is converted and reported by name (`conversions`); anything undecodable
raises `ImageError` with a reason slug that ends up in the manifest's skipped list.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

JPEG_QUALITY = 95
_SUFFIX_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


class ImageError(Exception):
    """An image that cannot become a sample; `reason` is the manifest's skip reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class EncodedImage:
    """The shard image: JPEG bytes, the original (width, height), and what had to be converted."""

    jpeg: bytes
    original_size: tuple[int, int]
    conversions: tuple[str, ...]


def target_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """(width, height) with the longest side equal to `image_size`, aspect ratio kept (>= 1 px)."""
    scale = image_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_grey(image: Image.Image, conversions: list[str]) -> Image.Image:
    """8-bit grey from any PIL mode; 16-bit and float images are min-max scaled like MIMIC's DICOM->JPG."""
    mode = image.mode
    if mode == "L":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        conversions.append("16-bit-to-8-bit")
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        conversions.append("alpha-dropped")
    elif mode in ("RGB", "CMYK", "YCbCr", "P"):
        conversions.append("colour-to-grey")
    return image.convert("L")


def encode_cxr_image(path: str | Path, image_size: int, quality: int = JPEG_QUALITY) -> EncodedImage:
    """Read `path` and return the shard JPEG; raises `ImageError` for missing/corrupt/truncated files."""
    path = Path(path)
    conversions: list[str] = []
    try:
        image = Image.open(path)
    except FileNotFoundError as error:
        raise ImageError("missing-image", f"{path} does not exist") from error
    except PermissionError as error:
        raise ImageError("unreadable-file", f"{path}: {error}; check the file's permissions") from error
    except Image.DecompressionBombError as error:
        raise ImageError("image-too-large", f"{path}: {error}") from error
    except (UnidentifiedImageError, OSError) as error:
        raise ImageError("corrupt-image", f"{path}: not a readable image ({error})") from error
    with image:
        expected = _SUFFIX_FORMATS.get(path.suffix.lower())
        if expected and image.format != expected:
            conversions.append(f"{str(image.format).lower()}-under-{path.suffix.lower().lstrip('.')}-name")
        original_size = image.size
        size = target_size(*original_size, image_size)
        if image.format == "JPEG" and image.mode in ("L", "RGB", "YCbCr"):
            if image.mode != "L":
                conversions.append("colour-to-grey")
            image.draft("L", size)
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as error:
            reason = "truncated-image" if "truncated" in str(error) else "corrupt-image"
            raise ImageError(reason, f"{path}: {error}") from error
        grey = _to_grey(image, conversions) if image.mode != "L" else image
        if grey.size != size:
            grey = grey.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        grey.save(buffer, format="JPEG", quality=quality)
    return EncodedImage(buffer.getvalue(), (int(original_size[0]), int(original_size[1])), tuple(conversions))
