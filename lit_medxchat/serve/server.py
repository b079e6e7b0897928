"""Run folders -> loaded models -> a launched page. Shared by `lit-medxchat serve` and the tests.

Run folders are checked (checkpoints, tokenizer) before any model is loaded and long before the
server binds its port, so a wrong `--run-dir` fails at once with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lit_medxchat.serve.run_info import RunInfo, describe_run, header_markdown
from lit_medxchat.serve.uploads import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from lit_medxchat.serve.app import ChatServer
    from lit_medxchat.serve.engine import ChatEngine


@dataclass(frozen=True)
class ServedRuns:
    """The run folders a page serves, each with the checkpoint it will load."""

    chat: RunInfo
    diffusion: RunInfo | None = None
    view: RunInfo | None = None

    @property
    def all(self) -> list[RunInfo]:
        return [run for run in (self.chat, self.diffusion, self.view) if run is not None]


def resolve_runs(chat_run: str | Path, diffusion_run: str | Path | None = None,
                 view_run: str | Path | None = None) -> ServedRuns:
    """Find each run's newest complete checkpoint; FileNotFoundError names the folder and the fix."""
    from lit_medxchat.training.completion import newest_checkpoint

    chat_run = Path(chat_run)
    if not chat_run.is_dir():
        raise FileNotFoundError(f"--run-dir {chat_run} is not a folder: give the folder `lit-medxchat fit` wrote "
                                "for the chat model (its --trainer.default_root_dir)")
    if not (chat_run / "tokenizer" / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"--run-dir {chat_run} has no tokenizer/: it is not a chat-model run folder "
                                "(`lit-medxchat fit --config .../chat` saves RUN/tokenizer when training starts)")
    runs = [("chat model", chat_run), ("CXR-SD", diffusion_run), ("view classifier", view_run)]
    infos = [describe_run(role, run, newest_checkpoint(Path(run))) if run is not None else None for role, run in runs]
    return ServedRuns(*infos)


def load_engine(runs: ServedRuns, output_dir: Path, device: str = "cpu", max_length: int = 1024) -> ChatEngine:
    """Load the chat pipeline (and CXR-SD, and the view classifier) from the resolved checkpoints."""
    from lit_medxchat.inference.pipeline import MedXChatPipeline
    from lit_medxchat.models.image_classifier import load_classifier
    from lit_medxchat.serve.engine import ChatEngine

    pipeline = MedXChatPipeline.from_run_dirs(
        runs.chat.run_dir, runs.diffusion.run_dir if runs.diffusion else None, device=device, max_length=max_length
    )
    view_classifier = None
    if runs.view is not None:
        view_classifier = load_classifier(runs.view.checkpoint, map_location=device)
        if view_classifier.kind != "view":
            raise ValueError(f"--view-run {runs.view.run_dir} holds a {view_classifier.kind} classifier, "
                             "not a view classifier (train one with `lit-medxchat fit --config .../view_classifier`)")
    return ChatEngine(pipeline, output_dir, view_classifier)


def start_server(runs: ServedRuns, host: str = "127.0.0.1", port: int | None = 7860, device: str = "cpu",
                 max_file_mb: int = 50, max_pixels: int = DEFAULT_MAX_PIXELS, max_length: int = 1024,
                 auth: tuple[str, str] | None = None) -> ChatServer:
    """Load the models and serve the page in background threads; the caller must `close()` it.

    `auth` (user, password): the page and its API answer only a logged-in browser or client."""
    from lit_medxchat.serve.app import Workdir, build_app, launch

    workdir = Workdir()
    try:
        engine = load_engine(runs, workdir.drawn, device, max_length)
        app = build_app(engine, runs.chat.run_dir.name, header_markdown(runs.all), max_pixels)
        return launch(app, workdir, host, port, max_file_mb, auth)
    except BaseException:
        workdir.remove()
        raise
