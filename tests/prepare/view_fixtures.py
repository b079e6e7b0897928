"""Frontal and lateral films drawn for the view tests, and a tiny view classifier trained on them.

The drawings keep what tells the views apart on a real radiograph (two lung fields either side
of a bright mediastinum on a frontal film; one lung field, the spine behind it and the heart in
front on a lateral film) and add real-film variation (display curves, equalisation, crops,
collimation, burned-in markers) so the classifier cannot key on one look. Seconds to train.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from datamodules.film_variation import FilmVariation, apply_film_variation
from datamodules.transforms import square_grey
from lit_medxchat.core.constants import VIEW_CLASSES
from lit_medxchat.models.classifiers import ViewClassifier, tiny_view_kwargs

TRAIN_SIZE = 32


def render_film(view: str, seed: int, size: tuple[int, int] = (120, 140), film: bool = True) -> Image.Image:
    """An 8-bit grey film of `view` ("PA" or "LATERAL"), its geometry jittered by `seed`."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.new("L", size, int(rng.integers(10, 30)))
    draw = ImageDraw.Draw(image)

    def box(cx: float, cy: float, rx: float, ry: float) -> tuple[float, float, float, float]:
        jitter = rng.uniform(0.9, 1.1, 4)
        return (
            (cx - rx * jitter[0]) * width,
            (cy - ry * jitter[1]) * height,
            (cx + rx * jitter[2]) * width,
            (cy + ry * jitter[3]) * height,
        )

    dx, dy = rng.uniform(-0.04, 0.04, 2)
    draw.ellipse(box(0.5 + dx, 0.55 + dy, 0.46, 0.5), fill=int(rng.integers(150, 190)))  # body
    if view == "LATERAL":
        draw.ellipse(box(0.5 + dx, 0.45 + dy, 0.3, 0.32), fill=int(rng.integers(40, 70)))  # one lung field
        draw.rectangle(box(0.8 + dx, 0.55 + dy, 0.05, 0.42), fill=int(rng.integers(200, 240)))  # spine, behind
        draw.ellipse(box(0.33 + dx, 0.62 + dy, 0.15, 0.14), fill=int(rng.integers(150, 200)))  # heart, in front
    else:
        for side in (-1, 1):
            draw.ellipse(box(0.5 + side * 0.2 + dx, 0.45 + dy, 0.15, 0.3), fill=int(rng.integers(40, 70)))  # lungs
        draw.rectangle(box(0.5 + dx, 0.45 + dy, 0.04, 0.4), fill=int(rng.integers(190, 230)))  # mediastinum
        draw.ellipse(box(0.56 + dx, 0.62 + dy, 0.13, 0.1), fill=int(rng.integers(170, 210)))  # heart
    image = image.filter(ImageFilter.GaussianBlur(radius=1.5))
    noise = rng.normal(0, 6, (height, width))
    image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8))
    return apply_film_variation(image, rng, FilmVariation()) if film else image


def train_view_classifier(out_dir: Path, steps: int = 400, seed: int = 0) -> Path:
    """Train a tiny ViT on drawn PA and LATERAL films (letterboxed as `ViewPredictor` does); export it."""
    torch.manual_seed(seed)
    kwargs = tiny_view_kwargs(TRAIN_SIZE)
    kwargs["config"] |= {"hidden_size": 64, "intermediate_size": 128}
    model = ViewClassifier(**kwargs, init_seed=seed)
    views = ("PA", "LATERAL")
    arrays, targets = [], []
    for k in range(384):
        view = views[k % 2]
        arrays.append(square_grey(render_film(view, 1000 + k), TRAIN_SIZE))
        targets.append(VIEW_CLASSES.index(view))
    images = torch.from_numpy(np.stack(arrays)).unsqueeze(1).float() / 255.0
    target = torch.tensor(targets)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(target), (32,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model.logits(model.preprocess(images[batch])), target[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    model.export_pretrained(out_dir)
    return out_dir


def save_variant(image: Image.Image, path: Path, variant: str) -> Path:
    """Write `image` as one of the real-world file variants: grey, 16-bit, RGB, RGBA, JPEG under a .png name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if variant == "grey":
        image.save(path, format="PNG")
    elif variant == "16bit":
        Image.fromarray(np.asarray(image).astype(np.uint16) * 257).save(path, format="PNG")
    elif variant == "rgb":
        image.convert("RGB").save(path, format="PNG")
    elif variant == "rgba":
        rgba = image.convert("RGBA")
        rgba.putalpha(255)
        rgba.save(path, format="PNG")
    elif variant == "jpeg":
        image.convert("RGB").save(path, format="JPEG", quality=92)  # whatever the file is called
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return path


VARIANTS = ("grey", "16bit", "rgb", "rgba", "jpeg")


def trained_view_classifier(tmp_path_factory) -> Path:
    """The drawn-film classifier, trained once per test session (shared by the test modules)."""
    out = tmp_path_factory.getbasetemp() / "trained-view-classifier"
    if not (out / "config.json").is_file():
        torch.set_num_threads(1)
        train_view_classifier(out)
    return out


def random_view_classifier(out_dir: Path) -> Path:
    """An untrained tiny view classifier: its top probability stays far below 0.8 (low confidence)."""
    ViewClassifier(**tiny_view_kwargs(TRAIN_SIZE), init_seed=3).export_pretrained(out_dir)
    return out_dir


def write_film_tree(root: Path, count: int = 10, seed: int = 7000) -> dict[str, str]:
    """`count` drawn films, alternating PA / LATERAL, across the file variants; {relative path: view}."""
    truth = {}
    for k in range(count):
        view = ("PA", "LATERAL")[k % 2]
        variant = VARIANTS[(k // 2) % len(VARIANTS)]
        name = f"{'frontal' if view == 'PA' else 'lateral'}/{variant}-{k}.png"
        save_variant(render_film(view, seed + k, size=(300, 360)), root / name, variant)
        truth[name] = view
    return truth
