"""The `lit-medxchat` command: a thin dispatcher to each sub-command's own `main(argv)`.

Sub-commands are imported lazily so that `lit-medxchat data synth` does not pay for importing
transformers and diffusers, and a missing optional dependency only breaks the command needing it.
"""

from __future__ import annotations

import importlib
import sys

# command words -> "module:function"; each function takes the remaining argv and returns an exit code.
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("data", "synth"): ("lit_medxchat.synth.cli:main", "render the built-in CXR dataset in the MIMIC-CXR-JPG layout"),
    ("data", "prepare"): (
        "lit_medxchat.inference.prepare_cli:main",
        "convert MIMIC-CXR-JPG or IU X-ray to WebDataset shards",
    ),
    ("tokenizer",): ("datamodules.tokenizer_cli:main", "train the chat tokenizer on the training shards' text"),
    ("fit",): ("lit_medxchat.training.cli:main", "train a model from a config (LightningCLI)"),
    ("validate",): ("lit_medxchat.training.cli:main", "validate a model from a config (LightningCLI)"),
    ("test",): ("lit_medxchat.training.cli:main", "test a model from a config (LightningCLI)"),
    ("predict",): ("lit_medxchat.training.cli:main", "predict with a model from a config (LightningCLI)"),
    ("chat",): ("lit_medxchat.inference.chat:main", "chat with a trained run: reports, VQA, text-to-CXR"),
    ("serve",): ("lit_medxchat.serve.cli:main", "a web chat for a trained run (gradio; the serve extra)"),
    ("export",): (
        "lit_medxchat.inference.export:main",
        "export checkpoints to peft / transformers / diffusers formats",
    ),
    ("classify-views",): (
        "lit_medxchat.inference.classify_views:main",
        "predict the view of every image in a folder",
    ),
    ("evaluate",): ("lit_medxchat.evaluation.cli:main", "the paper's chat tables for a trained run, on the test split"),
    ("demo",): ("lit_medxchat.demo.run:main", "the whole MedXChat loop on the built-in dataset"),
    ("plan",): ("lit_medxchat.plan.cli:main", "build a config's model on meta and say what a run needs per GPU"),
}


def _usage() -> str:
    lines = ["usage: lit-medxchat <command> [options]", "", "commands:"]
    for words, (_, help_text) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<16} {help_text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    for words, (target, _) in sorted(COMMANDS.items(), key=lambda item: -len(item[0])):
        if tuple(argv[: len(words)]) == words:
            module_name, function_name = target.split(":")
            function = getattr(importlib.import_module(module_name), function_name)
            # LightningCLI sub-commands keep their verb (fit/validate/...) in argv.
            rest = argv if module_name == "lit_medxchat.training.cli" else argv[len(words) :]
            return int(function(rest) or 0)
    print(f"lit-medxchat: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
