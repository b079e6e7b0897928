"""A contact sheet of rendered images with their view and findings, to judge realism at a glance."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

TILE_HEIGHT = 200
CAPTION_LINES = 3


def pick_varied(items: list[tuple[np.ndarray, str]], count: int) -> list[tuple[np.ndarray, str]]:
    """Prefer captions not seen yet (each finding kind and view once), then fill in order."""
    chosen: list[int] = []
    seen: set[str] = set()
    for i, (_, caption) in enumerate(items):
        view, _, what = caption.partition(": ")
        key = f"{view in ('LATERAL', 'LL')}:{what.split(' (')[0]}"
        if key not in seen:
            seen.add(key)
            chosen.append(i)
    chosen += [i for i in range(len(items)) if i not in chosen]
    return [items[i] for i in sorted(chosen[:count])]


def contact_sheet(items: list[tuple[np.ndarray, str]], path: Path, columns: int = 6, max_items: int = 24) -> int:
    """Write a PNG grid of `items` (uint8 image, caption); returns the number of images placed."""
    from PIL import Image, ImageDraw, ImageFont

    items = pick_varied(items, max_items)
    if not items:
        raise ValueError(f"{path}: no images to put on the contact sheet")
    font = ImageFont.load_default(size=11)
    tile_w = int(TILE_HEIGHT * 0.92)
    caption_h = 13 * CAPTION_LINES + 4
    rows = (len(items) + columns - 1) // columns
    sheet = Image.new("L", (columns * tile_w, rows * (TILE_HEIGHT + caption_h)), color=255)
    draw = ImageDraw.Draw(sheet)
    for i, (pixels, caption) in enumerate(items):
        image = Image.fromarray(pixels, mode="L")
        image.thumbnail((tile_w - 4, TILE_HEIGHT - 4))
        x0 = (i % columns) * tile_w
        y0 = (i // columns) * (TILE_HEIGHT + caption_h)
        sheet.paste(image, (x0 + (tile_w - image.width) // 2, y0 + 2))
        lines = textwrap.wrap(caption, 36)[:CAPTION_LINES]
        for k, line in enumerate(lines):
            draw.text((x0 + 3, y0 + TILE_HEIGHT + 1 + 13 * k), line, fill=0, font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG", optimize=True)
    return len(items)
