"""Chat examples for the run report, through `MedXChatPipeline` exactly as `lit-medxchat chat` runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_medxchat.core.constants import CHEXPERT_LABELS
from lit_medxchat.demo.results import ChatExamples, ChatTurn


def _held_out_image(data_dir: Path, figures: Path) -> tuple[Path, dict[str, Any], str]:
    """The first frontal test image with a finding its labels hold as present (not only uncertain ones), so the
    presence question asks about something the image shows; its metadata and report.

    The image is copied into `figures`, where the report links it from.
    """
    from datamodules.streaming import iter_samples

    chosen = None
    for sample in iter_samples(data_dir, "test"):
        meta = sample.json("json")
        informative = meta["view"] in ("PA", "AP") and _positive_findings(meta)
        if chosen is None or informative:
            chosen = (sample.member("jpg"), meta, sample.text("txt"))
        if informative:
            break
    image_bytes, meta, report = chosen
    path = figures / f"chat-input-{meta['dicom_id']}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes)
    return path, meta, report


def _positive_findings(meta: dict[str, Any]) -> list[str]:
    return [name for name in CHEXPERT_LABELS if meta["labels"].get(name) == 1.0 and name != "No Finding"]


def _named_finding(meta: dict[str, Any]) -> str:
    positives = _positive_findings(meta)
    return positives[0].lower() if positives else "pleural effusion"


def chat_examples(
    data_dir: Path, chat_checkpoint: str | Path, diffusion_checkpoint: str | Path, out: Path, figures: Path
) -> ChatExamples:
    """A report with its ground truth, two VQA turns, and a text-to-CXR request for a lateral view.

    The chat and CXR-SD models are the runs holding the two checkpoints; images land in `figures`
    and the transcript names them relative to `out` (the folder of the report).
    """
    from lit_medxchat.inference.pipeline import MedXChatPipeline

    pipeline = MedXChatPipeline.from_run_dirs(
        Path(chat_checkpoint).parents[1], Path(diffusion_checkpoint).parents[1], num_inference_steps=10
    )
    image, meta, report = _held_out_image(data_dir, figures)
    finding = _named_finding(meta)
    transcript: list[ChatTurn] = []

    instruction = "Generate a report of this chest x-ray."
    answer = pipeline(instruction, images=[image])
    transcript += [
        ChatTurn("user", f"[image {image.name}] {instruction}", image=str(image.relative_to(out))),
        ChatTurn("assistant", answer.answer, reference=report),
    ]
    history = [{"role": "user", "content": instruction}, {"role": "assistant", "content": answer.answer}]
    for question in (f"Is there {finding}?", f"Where is the {finding}?"):
        answer = pipeline(question, images=[image], history=history)
        transcript += [ChatTurn("user", question), ChatTurn("assistant", answer.answer)]
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer.answer}]

    request = f"Could you generate a lateral view of a chest X-ray showing {finding}?"
    answer = pipeline(request)
    content, generated = answer.answer, None
    if answer.images:
        (path, *_) = answer.save_images(figures, stem="chat-generated-lateral")
        generated = str(Path(path).relative_to(out))
    elif answer.warnings:
        content += f"  [{'; '.join(answer.warnings)}]"
    transcript += [ChatTurn("user", request), ChatTurn("assistant", content, image=generated)]
    return ChatExamples(transcript=transcript, finding=finding, xray_prompts=list(answer.xray_prompts))
