"""Write tiny shard sets exactly as data contract §2 says (the tests' own writer, independent of the project's).

Sample `i` of a split has key `dicom-{i:05d}`; consecutive pairs (2j, 2j+1) are one study with a PA and a
LATERAL image, so multi-view pairing has partners (sometimes in the next shard). The JPEG's mean grey level
encodes `i` so tests can check that the right pixels travel with the right key.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_SENTENCES


def key_of(index: int) -> str:
    return f"dicom-{index:05d}"


def grey_level(index: int) -> int:
    return 20 + (index * 7) % 200


def _jpeg(index: int, image_size: int) -> bytes:
    height, width = image_size, int(image_size * 0.8)
    rng = np.random.default_rng(index)
    pixels = np.full((height, width), grey_level(index), dtype=np.float32) + rng.normal(0, 2, (height, width))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def sample_members(index: int, split: str, image_size: int) -> dict[str, bytes]:
    study = index // 2
    view = "PA" if index % 2 == 0 else "LATERAL"
    labels = {name: [1.0, 0.0, -1.0, None][(index + k) % 4] for k, name in enumerate(CHEXPERT_LABELS)}
    findings = f"there is a small right pleural effusion number {index}."
    report = f"{VIEW_SENTENCES[view]} findings: {findings} impression: effusion."
    meta = {
        "dicom_id": key_of(index), "study_id": f"5{study:07d}", "subject_id": f"1{study:07d}", "split": split,
        "view": view, "view_position": view, "labels": labels,
        "sections": {"findings": findings, "impression": "effusion.", "last_paragraph": None, "comparison": None},
        "original_size": [int(image_size * 0.8), image_size], "source": "mimic-cxr",
        "study_images": [{"dicom_id": key_of(2 * study), "view": "PA"},
                         {"dicom_id": key_of(2 * study + 1), "view": "LATERAL"}],
    }
    conv = {"dialogues": [
        {"task": "report", "turns": [{"role": "user", "content": "Please write the report."},
                                     {"role": "assistant", "content": report}]},
        {"task": "vqa", "turns": [{"role": "user", "content": "Is there a pleural effusion?"},
                                  {"role": "assistant", "content": "yes", "topic": "presence",
                                   "diagnosis": "Pleural Effusion", "answer": "yes"}]},
        {"task": "t2i", "turns": [{"role": "user", "content": f"Draw a {view} chest X-ray with an effusion."},
                                  {"role": "assistant", "content": f"Here: <Xray> {report} </Xray>"}]},
    ]}
    return {
        "jpg": _jpeg(index, image_size),
        "txt": report.encode(),
        "json": json.dumps(meta).encode(),
        "conv.json": json.dumps(conv).encode(),
    }


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_split(root: Path, split: str, shard_sizes: list[int], *, image_size: int = 64, start: int = 0,
                corrupt: frozenset[int] = frozenset()) -> list[str]:
    """Write `root/split/shard-*.tar` + manifest.json; samples in `corrupt` get an undecodable JPEG.

    Returns the keys in write order.
    """
    out = Path(root) / split
    out.mkdir(parents=True, exist_ok=True)
    keys, shards, index = [], [], start
    for shard_number, size in enumerate(shard_sizes):
        name = f"shard-{shard_number:06d}.tar"
        with tarfile.open(out / name, "w") as tar:
            for _ in range(size):
                members = sample_members(index, split, image_size)
                if index in corrupt:
                    members["jpg"] = b"not a jpeg"
                for ext, data in members.items():
                    _add(tar, f"{key_of(index)}.{ext}", data)
                keys.append(key_of(index))
                index += 1
        digest = hashlib.sha256((out / name).read_bytes()).hexdigest()
        shards.append({"name": name, "num_samples": size, "sha256": digest})
    manifest = {"split": split, "num_samples": sum(shard_sizes), "shards": shards, "skipped": [],
                "skipped_by_reason": {}, "source": {"kind": "test", "root": ""}, "options": {"image_size": image_size},
                "created": "2026-01-01T00:00:00", "version": 1}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return keys
