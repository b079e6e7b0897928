"""Loader throughput: our streaming DataModule vs a bare tarfile + PIL loop over the same shards.

Prints samples/s for
- raw: read the shards in order with `tarfile`, decode every JPEG to grey at full size (PIL), nothing else;
- raw, reduced decode: the same with libjpeg's DCT scaling (`Image.draft`), which our pipeline also uses;
- raw, same per-sample work: the same tarfile loop calling our per-sample image pipeline (decode, letterbox,
  augmentation, normalisation): the loader's own overhead (planning, random access, batching) is the gap;
- ours: `ClassifierDataModule` training loader (epoch plan, random-access reads, decode, letterbox to
  224 px, rotation/zoom/shift and brightness/contrast augmentation, normalisation, collation), with 0, 1
  and 2 worker processes,
and the ratios ours(0 workers) / each raw loop and 2 workers / 1 worker, all measured in the same run, best of
`--repeats` with the variants taking turns. Rates are given per wall-clock second and per CPU second
(this process plus its loader workers): on a shared machine the CPU figure is the stable one.

With `--url`, instead: the same DataModule reading the same shards from the local folder (random access) and
streamed over loopback HTTP (`python -m http.server` in another process; webdataset's curl opener and tar
iterators), same plan, same per-sample work, with 0 and 2 workers, and the ratios HTTP / local.

Usage: python benchmarks/bench_loader.py [--samples 1024] [--repeats 3] [--url]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datamodules.classifier import ClassifierDataModule
from datamodules.shards import ShardWriter, build_manifest
from datamodules.transforms import Augment, ImagePipeline
from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_SENTENCES


def synthetic_cxr(rng: np.random.Generator, size: int = 512) -> bytes:
    """A smooth CXR-like grey JPEG (portrait, longest side `size`): body, two lungs, mediastinum, mild noise.

    JPEG cost depends on image content; smooth anatomy with a little noise compresses like a real
    radiograph (tens of kB at 512 px, quality 95), unlike pure noise.
    """
    height, width = size, int(size * 0.82)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height * rng.uniform(0.5, 0.56), width * rng.uniform(0.48, 0.52)
    body = np.exp(-(((x - cx) / (width * 0.42)) ** 6 + ((y - cy) / (height * 0.55)) ** 6))
    lungs = sum(np.exp(-(((x - cx - side * width * 0.2) / (width * 0.14)) ** 2
                         + ((y - cy + height * 0.05) / (height * 0.3)) ** 2)) for side in (-1, 1))
    heart = np.exp(-(((x - cx + width * 0.04) / (width * 0.12)) ** 2
                     + ((y - cy - height * 0.1) / (height * 0.12)) ** 2))
    ribs = 0.06 * np.sin(y / height * 70 + np.abs(x - cx) / width * 8) * lungs
    image = 40 + 150 * body - 90 * lungs + 70 * heart + 255 * ribs + rng.normal(0, 3, (height, width))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_shards(root: Path, num_samples: int, per_shard: int = 128, distinct: int = 32) -> None:
    """`root/train/` shards + manifest through the project's ShardWriter (images cycle over `distinct` renders)."""
    rng = np.random.default_rng(0)
    images = [synthetic_cxr(rng) for _ in range(distinct)]
    shards, writer = [], None
    for index in range(num_samples):
        if index % per_shard == 0:
            if writer is not None:
                shards.append(writer.close())
            writer = ShardWriter(root / "train", index // per_shard)
        view = "PA" if index % 3 else "LATERAL"
        meta = {"dicom_id": f"d{index:06d}", "view": view, "labels": {name: None for name in CHEXPERT_LABELS},
                "study_images": []}
        writer.write(f"d{index:06d}", {"jpg": images[index % distinct], "txt": VIEW_SENTENCES[view].encode(),
                                      "json": json.dumps(meta).encode(), "conv.json": b'{"dialogues": []}'})
    shards.append(writer.close())
    manifest = build_manifest(split="train", shards=shards, skipped=[], converted_by_reason={}, dialogue_stats={},
                              source={"kind": "benchmark"}, options={"image_size": 512})
    (root / "train" / "manifest.json").write_text(json.dumps(manifest))


def raw_loop(root: Path, reduced: bool, pipeline: ImagePipeline | None = None) -> int:
    """Read every shard in order with tarfile; decode each JPEG (or run `pipeline` on it: same per-sample work)."""
    count = 0
    for path in sorted((root / "train").glob("shard-*.tar")):
        with tarfile.open(path) as tar:
            for info in tar:
                if info.name.endswith(".jpg"):
                    data = tar.extractfile(info).read()
                    if pipeline is not None:
                        pipeline(data, np.random.default_rng(count))
                    else:
                        image = Image.open(io.BytesIO(data))
                        if reduced:
                            image.draft("L", (184, 224))
                        image.convert("L").load()
                    count += 1
    return count


def ours(root: Path | str, workers: int, lanes: int | None = None) -> int:
    module = ClassifierDataModule(str(root), batch_size=32, num_workers=workers, image_size=224, augment=True,
                                  lanes=lanes)
    module.setup("fit")
    return sum(len(batch["keys"]) for batch in module.train_dataloader())


def serve(root: Path) -> tuple[subprocess.Popen, str]:
    """`python -m http.server` on a free loopback port serving `root`, in its own process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                               str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def compare_url(root: Path, samples: int, repeats: int) -> None:
    """Streaming over loopback HTTP vs the local folder: same DataModule, plan and per-sample work."""
    server, url = serve(root)
    try:
        variants = {
            "local folder, 0 workers": lambda: ours(root, 0, lanes=1),
            "HTTP loopback, 0 workers": lambda: ours(url, 0, lanes=1),
            "local folder, 2 workers": lambda: ours(root, 2, lanes=2),
            "HTTP loopback, 2 workers": lambda: ours(url, 2, lanes=2),
        }
        rates, cpu_rates = best_rates(variants, repeats)
    finally:
        server.terminate()
        server.wait()
    print(f"samples: {samples} grey JPEGs 512x419, batch 32, 224 px with augmentation, best of {repeats}")
    print(f"{'':<28} {'samples/s':>10} {'samples/CPU-s':>14}")
    for name, rate in rates.items():
        print(f"{name:<28} {rate:10.1f} {cpu_rates[name]:14.1f}")
    for workers in (0, 2):
        http, local = f"HTTP loopback, {workers} workers", f"local folder, {workers} workers"
        print(f"HTTP / local, {workers} workers: {rates[http] / rates[local]:5.2f}x wall, "
              f"{cpu_rates[http] / cpu_rates[local]:5.2f}x CPU  (target >= 0.9x)")
    print(f"load average during the run (1 min): {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (loader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def best_rates(variants: dict[str, Callable[[], int]], repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Best samples per wall-clock second and per CPU second of each variant, the variants taking turns."""
    wall = {name: 0.0 for name in variants}
    cpu = {name: 0.0 for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            start, cpu_start = time.perf_counter(), _cpu_seconds()
            count = run()
            wall[name] = max(wall[name], count / (time.perf_counter() - start))
            cpu[name] = max(cpu[name], count / max(_cpu_seconds() - cpu_start, 1e-9))
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--url", action="store_true", help="compare streaming over loopback HTTP with the folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_shards(root, args.samples)
        if args.url:
            compare_url(root, args.samples, args.repeats)
            return
        size_kb = np.mean([p.stat().st_size for p in (root / "train").glob("*.tar")]) / 1024 / 128
        same_work = ImagePipeline(224, augment=Augment())
        variants = {
            "raw (tarfile + full PIL decode)": lambda: raw_loop(root, reduced=False),
            "raw (tarfile + reduced PIL decode)": lambda: raw_loop(root, reduced=True),
            "raw (tarfile + our per-sample pipeline)": lambda: raw_loop(root, True, same_work),
            "ours, 0 workers": lambda: ours(root, 0),
            "ours, 1 worker": lambda: ours(root, 1),
            "ours, 2 workers": lambda: ours(root, 2),
        }
        rates, cpu_rates = best_rates(variants, args.repeats)
    print(f"samples: {args.samples} grey JPEGs 512x419 (~{size_kb:.0f} kB per sample in the tars), batch 32, "
          f"224 px with augmentation, best of {args.repeats}")
    print(f"{'':<40} {'samples/s':>10} {'samples/CPU-s':>14}")
    for name, rate in rates.items():
        print(f"{name:<40} {rate:10.1f} {cpu_rates[name]:14.1f}")
    ours_wall, ours_cpu = rates["ours, 0 workers"], cpu_rates["ours, 0 workers"]
    for label, name in (("raw, same per-sample work", "raw (tarfile + our per-sample pipeline)"),
                        ("raw full decode only", "raw (tarfile + full PIL decode)"),
                        ("raw reduced decode only", "raw (tarfile + reduced PIL decode)")):
        target = "  (target >= 0.9x)" if label.startswith("raw, same") else ""
        print(f"ours(0 workers) / {label:<26} {ours_wall / rates[name]:5.2f}x wall, "
              f"{ours_cpu / cpu_rates[name]:5.2f}x CPU{target}")
    print(f"2 workers / 1 worker (wall):                  {rates['ours, 2 workers'] / rates['ours, 1 worker']:5.2f}x"
          "  (target >= 1.7x; needs two idle cores)")
    print(f"load average during the run (1 min): {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
