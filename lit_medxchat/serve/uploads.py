"""Uploaded files -> 8-bit grey CXRs, the way the shards hold them, or a message naming what is wrong.

Files are decoded by content, never by name: a PNG saved as `.jpg`, a 16-bit PNG (min-max scaled
like MIMIC's DICOM->JPG), an RGBA or colour image all become 8-bit grey. Each goes through the
prepare step's own `encode_cxr_image` (JPEG q95), so the chat model sees an upload exactly as it saw
its training images. Size is checked from the header before anything is decoded, so a small file
that expands to a huge image (a decompression bomb) is refused without being decoded.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000  # a 6000 x 6600 film; MIMIC-CXR-JPG originals are ~3000 x 2500
MAX_IMAGES = 2  # MedXChat reads one study: a frontal view, then optionally a lateral one

_REASONS = {
    "corrupt-image": "is not a readable image",
    "truncated-image": "is truncated (the file or its upload is incomplete)",
    "unreadable-file": "cannot be read (permissions)",
    "missing-image": "was not received",
    "image-too-large": "is too large to decode",
}


class UploadError(ValueError):
    """An upload that cannot become a CXR; the message names the file and says what to do."""


@dataclass(frozen=True)
class UploadedCXR:
    """One decoded upload.

    Attributes:
        name: the file name the user uploaded (for messages and captions).
        image: 8-bit grey ("L") PIL image at the original resolution.
        original_size: (width, height) in pixels as stored in the file.
        source_format: what the content is (PIL's format name: "JPEG", "PNG", ...).
        conversions: what decoding changed ("16-bit-to-8-bit", "alpha-dropped", "png-under-jpg-name", ...).
    """

    name: str
    image: Image.Image
    original_size: tuple[int, int]
    source_format: str
    conversions: tuple[str, ...]


def decode_upload(path: str | Path, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> UploadedCXR:
    """Decode one uploaded file; raises `UploadError` with a message fit for the page."""
    from datamodules.sources.images import ImageError, encode_cxr_image
    from datamodules.transforms import decode_grey

    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise UploadError(f"{name} was not received; upload it again")
    if path.stat().st_size == 0:
        raise UploadError(f"{name} is empty (0 bytes); upload a JPEG or PNG chest X-ray")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(path) as header:
                source_format, (width, height) = str(header.format), header.size
    except Image.DecompressionBombError as error:
        raise UploadError(f"{name} is far larger than the limit of {max_pixels / 1e6:.0f} megapixels") from error
    except (UnidentifiedImageError, OSError) as error:
        raise UploadError(f"{name} is not an image; upload a JPEG or PNG chest X-ray") from error
    if width * height > max_pixels:
        raise UploadError(
            f"{name} is {width} x {height} pixels, more than the limit of {max_pixels / 1e6:.0f} megapixels; "
            "downscale it or start the server with a larger --max-megapixels"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            encoded = encode_cxr_image(path, max(width, height))
    except ImageError as error:
        raise UploadError(f"{name} {_REASONS.get(error.reason, 'cannot be decoded')}; upload it again "
                          "or convert it to PNG") from error
    return UploadedCXR(name, decode_grey(encoded.jpeg), encoded.original_size, source_format, encoded.conversions)


def decode_uploads(
    files: Sequence[tuple[str | Path, str]], max_pixels: int = DEFAULT_MAX_PIXELS, max_images: int = MAX_IMAGES
) -> tuple[list[UploadedCXR], list[str]]:
    """Decode (path, name) pairs; returns the CXRs and one problem message per file refused.

    More than `max_images` readable files are all refused (the model reads one study: which two
    were meant cannot be guessed), with a message saying how many to remove.
    """
    images, problems = [], []
    for path, name in files:
        try:
            images.append(decode_upload(path, name, max_pixels))
        except UploadError as error:
            problems.append(str(error))
    if len(images) > max_images:
        problems.append(
            f"{len(images)} readable CXRs were uploaded; MedXChat reads at most {max_images} per conversation "
            f"(a frontal view, then a lateral one): remove {len(images) - max_images}"
        )
        images = []
    return images, problems
