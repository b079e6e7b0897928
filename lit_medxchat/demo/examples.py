"""Chat examples for the run report, through `MedXChatPipeline` exactly as `lit-medxchat chat` runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_medxchat.core.constants import CHEXPERT_LABELS


def _held_out_image(demo: Any) -> tuple[Path, dict[str, Any], str]:
    """A frontal test image with a finding (the most informative example), its metadata and report."""
    from datamodules.streaming import iter_samples

    chosen = None
    for sample in iter_samples(demo.shards, "test"):
        meta = sample.json("json")
        informative = meta["view"] in ("PA", "AP") and meta["labels"].get("No Finding") != 1.0
        if chosen is None or informative:
            chosen = (sample.member("jpg"), meta, sample.text("txt"))
        if informative:
            break
    image_bytes, meta, report = chosen
    path = demo.figures / f"chat-input-{meta['dicom_id']}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes)
    return path, meta, report


def _named_finding(meta: dict[str, Any]) -> str:
    positives = [name for name in CHEXPERT_LABELS if meta["labels"].get(name) == 1.0 and name != "No Finding"]
    return positives[0].lower() if positives else "pleural effusion"


def chat_examples(demo: Any) -> dict[str, Any]:
    """A report with its ground truth, two VQA turns, and a text-to-CXR request for a lateral view."""
    from lit_medxchat.inference.pipeline import MedXChatPipeline

    results = demo.runner.results
    chat_run = Path(results["chat"]["checkpoint"]).parents[1]
    pipeline = MedXChatPipeline.from_run_dirs(
        chat_run, Path(results["diffusion"]["checkpoint"]).parents[1], num_inference_steps=10
    )
    image, meta, report = _held_out_image(demo)
    finding = _named_finding(meta)
    transcript: list[dict[str, Any]] = []

    instruction = "Generate a report of this chest x-ray."
    answer = pipeline(instruction, images=[image])
    transcript += [
        {"role": "user", "content": f"[image {image.name}] {instruction}", "image": str(image.relative_to(demo.out))},
        {"role": "assistant", "content": answer.answer, "reference": report},
    ]
    history = [{"role": "user", "content": instruction}, {"role": "assistant", "content": answer.answer}]
    for question in (f"Is there {finding}?", f"Where is the {finding}?"):
        answer = pipeline(question, images=[image], history=history)
        transcript += [{"role": "user", "content": question}, {"role": "assistant", "content": answer.answer}]
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer.answer}]

    request = f"Could you generate a lateral view of a chest X-ray showing {finding}?"
    answer = pipeline(request)
    turn: dict[str, Any] = {"role": "assistant", "content": answer.answer}
    if answer.images:
        (path, *_) = answer.save_images(demo.figures, stem="chat-generated-lateral")
        turn["image"] = str(Path(path).relative_to(demo.out))
    elif answer.warnings:
        turn["content"] += f"  [{'; '.join(answer.warnings)}]"
    transcript += [{"role": "user", "content": request}, turn]
    return {"transcript": transcript, "finding": finding, "xray_prompts": answer.xray_prompts}
