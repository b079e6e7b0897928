"""The page (gradio Blocks) and the server's life: a private working folder, launch, close.

Kept offline and private: analytics and gradio's version check are off (`analytics_enabled=False`;
`cli.py` also sets GRADIO_ANALYTICS_ENABLED=False before importing gradio), fonts are the ones gradio
ships, nothing is shared through gradio's tunnel, and every file the server touches (uploads,
thumbnails, drawn CXRs) lives in one temporary folder that `ChatServer.close` removes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr  # the serve extra; cli.py prints the install hint when it is missing

from lit_medxchat.serve.handlers import ChatHandlers
from lit_medxchat.serve.tasks import FINDING_CHOICES, VIEW_CHOICES, draw_request, question_request, report_request
from lit_medxchat.serve.uploads import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from lit_medxchat.serve.engine import ChatEngine

GENERATION = "medxchat-generation"  # one concurrency group: a single generation at a time, the rest wait
CSS = "#notice:empty { display: none; } #run-header table { font-size: 0.85em; }"


@dataclass
class Workdir:
    """The server's temporary folder; gradio's upload cache is pointed into it while it exists."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lit-medxchat-serve-")))
    _previous: str | None = None

    def __post_init__(self) -> None:
        self._previous = os.environ.get("GRADIO_TEMP_DIR")
        os.environ["GRADIO_TEMP_DIR"] = str(self.gradio_cache)  # read by gr.Blocks and its app when built

    @property
    def gradio_cache(self) -> Path:
        return self.root / "gradio"

    @property
    def drawn(self) -> Path:
        return self.root / "drawn"

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self._previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = self._previous


def build_app(engine: ChatEngine, title: str, header: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> gr.Blocks:
    """The chat page for `engine`; `header` (markdown) names the served runs."""
    from lit_medxchat.serve.engine import Conversation

    handlers = ChatHandlers(engine, max_pixels)
    settings = engine.default_settings()
    with gr.Blocks(title=f"MedXChat · {title}", analytics_enabled=False, fill_width=True) as app:
        gr.Markdown(f"## MedXChat · {title}\n\n{header}", elem_id="run-header")
        conversation = gr.State(Conversation())
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                uploads = gr.File(label="CXR image(s): a frontal view, optionally a lateral one", file_count="multiple",
                                  type="filepath", elem_id="uploads", height=120)
                thumbnails = gr.Gallery(label="Uploaded CXRs (predicted view)", columns=2, height=220,
                                        elem_id="thumbnails", interactive=False, format="png", buttons=[])
                notice = gr.Markdown(elem_id="notice")
                with gr.Row():
                    finding = gr.Dropdown(list(FINDING_CHOICES), value="Pleural Effusion", label="Finding",
                                          elem_id="finding")
                    view = gr.Dropdown(list(VIEW_CHOICES), value="LATERAL", label="View to draw", elem_id="view")
                with gr.Row():
                    report_button = gr.Button("Report", elem_id="task-report")
                    question_button = gr.Button("Ask about finding", elem_id="task-question")
                    draw_button = gr.Button("Draw CXR", elem_id="task-draw", interactive=engine.can_draw)
                with gr.Accordion("Generation settings", open=False, elem_id="settings"):
                    num_beams = gr.Slider(1, 8, value=settings.num_beams, step=1, label="beams (1 streams the answer)")
                    max_new_tokens = gr.Slider(8, 1024, value=settings.max_new_tokens, step=8,
                                               label="max new tokens")
                    steps = gr.Slider(1, 100, value=settings.num_inference_steps, step=1, label="diffusion steps")
                    seed = gr.Number(value=settings.seed, precision=0, minimum=0, label="seed of the drawn CXRs")
            with gr.Column(scale=2, min_width=420):
                chatbot = gr.Chatbot(label="Conversation", height=560, elem_id="chat", buttons=["copy"],
                                     feedback_options=None, allow_file_downloads=True, layout="bubble")
                with gr.Row():
                    message = gr.Textbox(show_label=False, scale=5, elem_id="message", lines=1, max_lines=6,
                                         placeholder="Ask about the CXR, or ask for a CXR to be drawn")
                    send = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="send")
                new = gr.Button("New conversation", size="sm", elem_id="new-conversation")

        chat_inputs = [message, conversation, num_beams, max_new_tokens, steps, seed]
        chat_outputs = [chatbot, conversation, message, notice]
        chat_options: dict[str, Any] = {"concurrency_id": GENERATION, "concurrency_limit": 1}
        send.click(handlers.respond, chat_inputs, chat_outputs, api_name="chat", **chat_options)
        message.submit(handlers.respond, chat_inputs, chat_outputs, api_visibility="private", **chat_options)
        for button, fill, inputs in (
            (report_button, report_request, []),
            (question_button, question_request, [finding]),
            (draw_button, draw_request, [view, finding]),
        ):
            button.click(fill, inputs, message, api_visibility="private", queue=False).then(
                handlers.respond, chat_inputs, chat_outputs, api_visibility="private", **chat_options)
        uploads.change(handlers.upload, [uploads, conversation], [thumbnails, notice, conversation, chatbot],
                       api_name="upload", **chat_options)
        new.click(handlers.new_conversation, [conversation], [chatbot, conversation, notice],
                  api_name="new_conversation")
    return app


@dataclass
class ChatServer:
    """A launched page: `url`, and `close()` to stop it and remove its working folder."""

    app: gr.Blocks
    url: str
    workdir: Workdir

    def close(self) -> None:
        self.app.close(verbose=False)
        self.workdir.remove()


def launch(app: gr.Blocks, workdir: Workdir, host: str = "127.0.0.1", port: int | None = 7860,
           max_file_mb: int = 50, auth: tuple[str, str] | None = None) -> ChatServer:
    """Start serving `app` in background threads (one generation at a time; other requests queue).

    With `auth` (user, password) gradio shows its login page and refuses the API to a client without the session
    cookie the login sets."""
    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, show_error=False,
        share=False, inbrowser=False, ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False,
        run_history=False, footer_links=["api"], max_file_size=f"{max_file_mb}mb",
        allowed_paths=[str(workdir.drawn)], css=CSS, auth=auth,
    )
    return ChatServer(app, app.local_url.rstrip("/"), workdir)
