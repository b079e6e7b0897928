"""The page's event handlers: component values in, component values out.

Every problem a user can cause (an unreadable upload, an empty question, a question too long for
the model, bad settings from an API caller) ends as a sentence in the page's notice area, never as a
traceback; an unexpected model failure is logged with its traceback on the server's console and
named in the notice. Generated CXRs are shown inline, labelled as synthetic, with gradio's download
button.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from lit_medxchat.serve.engine import FRONTAL_VIEWS, ChatEngine, Conversation, GenerationSettings
from lit_medxchat.serve.uploads import DEFAULT_MAX_PIXELS, decode_uploads

log = logging.getLogger(__name__)

SYNTHETIC_LABEL = "Synthetic CXR drawn by CXR-SD from the prompt above, not a patient's radiograph"


def display_text(answer: str) -> str:
    """Model text for the chat window: HTML-escaped, so `<Xray> ... </Xray>` shows as written."""
    return html.escape(answer, quote=False)


def notice(*lines: str) -> str:
    return "\n".join(f"- {line}" for line in lines)


def _file_path(item: Any) -> str:
    """gradio hands uploads as paths (type="filepath"); API callers may send FileData-like dicts."""
    return str(item.get("path") if isinstance(item, dict) else item)


class ChatHandlers:
    """The handlers of one served model; `engine` is shared by every browser tab."""

    def __init__(self, engine: ChatEngine, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.engine = engine
        self.max_pixels = max_pixels

    # ---- uploads --------------------------------------------------------------------------------
    def upload(
        self, files: list[Any] | None, conversation: Conversation | None
    ) -> tuple[list, str, Conversation, list]:
        """New CXRs start a new conversation. Returns (thumbnails, notice, conversation, chat messages)."""
        paths = [_file_path(item) for item in files or []]
        images, problems = decode_uploads([(path, Path(path).name) for path in paths], self.max_pixels)
        views = self.engine.predict_views([cxr.image for cxr in images])
        lines = list(problems)
        if len(views) == 2 and views[0].view == "LATERAL" and views[1].view in FRONTAL_VIEWS:
            images, views = images[::-1], views[::-1]
            lines.append(f"{images[0].name} looks frontal and {images[1].name} lateral: "
                         "the model reads them in that order")
        for cxr in images:
            if cxr.conversions:
                lines.append(f"{cxr.name}: {', '.join(cxr.conversions)} (read as 8-bit grey)")
        had_turns = bool(conversation and conversation.turns)
        if images and had_turns:
            lines.append("new images: a new conversation starts")
        new = Conversation(images=images, views=views)
        thumbnails = [(cxr.image, self._caption(index, new)) for index, cxr in enumerate(images)]
        return thumbnails, notice(*lines), new, []

    @staticmethod
    def _caption(index: int, conversation: Conversation) -> str:
        name = conversation.images[index].name
        if index < len(conversation.views):
            return f"{name}: {conversation.views[index].caption}"
        return name

    # ---- conversation -----------------------------------------------------------------------------
    def new_conversation(self, conversation: Conversation | None) -> tuple[list, Conversation, str]:
        """Forget the turns, keep the uploaded CXRs. Returns (chat messages, conversation, notice)."""
        kept = conversation or Conversation()
        return [], Conversation(images=kept.images, views=kept.views), ""

    def respond(
        self,
        message: str,
        conversation: Conversation | None,
        num_beams: float,
        max_new_tokens: float,
        num_inference_steps: float,
        seed: float,
    ) -> Iterator[tuple[list, Conversation, str, str]]:
        """Stream the answer. Yields (chat messages, conversation, message box, notice)."""
        conversation = conversation or Conversation()
        shown = list(conversation.messages)
        message = (message or "").strip()
        if not message:
            yield shown, conversation, "", notice("type a question or a request first, or use a task button")
            return
        try:
            settings = GenerationSettings(int(num_beams), int(max_new_tokens), int(num_inference_steps), int(seed))
        except (TypeError, ValueError) as error:
            yield shown, conversation, message, notice(str(error))
            return
        shown.append({"role": "user", "content": display_text(message)})
        yield shown + [{"role": "assistant", "content": "…"}], conversation, "", ""
        final = None
        try:
            for update in self.engine.answer(conversation, message, settings):
                if update.done:
                    final = update
                    break
                status = "\n\n*drawing the CXR…*" if update.drawing else ""
                partial = {"role": "assistant", "content": display_text(update.text) + status}
                yield [*shown, partial], conversation, "", ""
        except Exception as error:  # the user must see what failed; the console gets the traceback
            log.exception("generation failed for %r", message)
            yield shown[:-1], conversation, message, notice(f"the model could not answer: {error}")
            return
        assert final is not None
        reply = self._reply(final, settings)
        turns = [*conversation.turns, {"role": "user", "content": message},
                 {"role": "assistant", "content": final.text}]
        updated = replace(conversation, turns=turns, messages=[*shown, reply])
        yield updated.messages, updated, "", notice(*final.warnings) if final.warnings else ""

    def _reply(self, final: Any, settings: GenerationSettings) -> dict[str, Any]:
        content: list[Any] = [display_text(final.text) or "*(empty answer)*"]
        for index, path in enumerate(final.images, start=1):
            content.append(f"*{SYNTHETIC_LABEL} ({index} of {len(final.images)}; seed {settings.seed}, "
                           f"{settings.num_inference_steps} steps).*")
            content.append({"path": str(path), "alt_text": f"synthetic CXR {index}"})
        return {"role": "assistant", "content": content}
