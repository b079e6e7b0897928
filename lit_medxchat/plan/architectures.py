"""Hub ids and local folders -> architecture configs, so a paper config builds offline.

Model constructors load `name_or_path` with `from_pretrained`, which needs weights (and, for hub ids, the
network). The plan needs only the architecture: it rewrites each `name_or_path` of a model's init args
into the equivalent config dict (from a local folder's `config.json`, or from the files shipped in
`lit_medxchat/architectures/`), and a tokenizer that cannot be loaded into a stand-in of the same size.
Training is untouched: only the plan rewrites its copy of the config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ARCHITECTURES_DIR = Path(__file__).resolve().parent.parent / "architectures"

# Keys of a config.json that are bookkeeping, labels or dtypes, not architecture: the builders set these.
_NOT_ARCHITECTURE = {
    "architectures", "transformers_version", "torch_dtype", "dtype", "_name_or_path", "_class_name",
    "_diffusers_version", "id2label", "label2id", "num_labels", "problem_type",
}
# Vocabulary of a tokenizer the plan cannot load and knows nothing about (`lit-medxchat tokenizer`'s default).
DEFAULT_VOCAB_SIZE = 2000


def shipped_index() -> dict[str, dict[str, Any]]:
    """Hub id -> {"folder": ..., "tokenizer": {...}} for every shipped architecture."""
    return json.loads((ARCHITECTURES_DIR / "index.json").read_text())


def _read_config(folder: Path, field_name: str) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{field_name}: {folder} has no config.json, so its architecture is unknown")
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in _NOT_ARCHITECTURE}


def architecture_folder(name_or_path: str, field_name: str) -> Path:
    """The folder holding `name_or_path`'s config.json: the local folder itself, else the shipped copy."""
    local = Path(name_or_path)
    if local.is_dir():
        return local
    entry = shipped_index().get(name_or_path)
    if entry is None:
        raise ValueError(
            f"{field_name}={name_or_path!r} is neither a local folder nor a hub id with a shipped architecture "
            f"(shipped: {', '.join(sorted(shipped_index()))}); point it at a folder with a config.json"
        )
    return ARCHITECTURES_DIR / entry["folder"]


def architecture_config(name_or_path: str, field_name: str, subfolder: str | None = None) -> dict[str, Any]:
    """`name_or_path`'s config.json (or `subfolder/config.json`) as a dict without bookkeeping keys."""
    folder = architecture_folder(name_or_path, field_name)
    return _read_config(folder / subfolder if subfolder else folder, field_name)


def vision_config(name_or_path: str, field_name: str) -> dict[str, Any]:
    """A vision tower's config dict as `VisionOptions.config` takes it (a CLIP model's vision half)."""
    config = architecture_config(name_or_path, field_name)
    if config.get("model_type") == "clip":
        vision = dict(config["vision_config"])
        vision["model_type"] = "clip_vision_model"
        return vision
    return config


def tokenizer_facts(name_or_path: str) -> tuple[dict[str, Any], str | None]:
    """(facts, note) of a tokenizer the plan cannot load: shipped facts, or a default size with a note."""
    entry = shipped_index().get(name_or_path, {})
    if "tokenizer" in entry:
        return dict(entry["tokenizer"]), None
    note = (
        f"tokenizer {name_or_path!r} not found: planned with a stand-in of {DEFAULT_VOCAB_SIZE} tokens "
        "(the `lit-medxchat tokenizer` default); embeddings scale with the real size"
    )
    return {"vocab_size": DEFAULT_VOCAB_SIZE}, note


def write_stand_in_tokenizer(facts: dict[str, Any], out_dir: Path) -> Path:
    """A word-level tokenizer with `facts["vocab_size"]` tokens and the named special tokens, saved to `out_dir`.

    Only its size and special tokens matter to the plan (they size the embeddings); it never tokenises text.
    """
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    special = {key: facts[key] for key in ("unk_token", "bos_token", "eos_token") if key in facts}
    special.setdefault("unk_token", "<unk>")
    special.setdefault("eos_token", "</s>")
    names = list(dict.fromkeys(special.values()))
    vocab = {name: i for i, name in enumerate(names)}
    vocab.update({f"tok{i}": i for i in range(len(names), int(facts["vocab_size"]))})
    backend = Tokenizer(models.WordLevel(vocab, unk_token=special["unk_token"]))
    PreTrainedTokenizerFast(tokenizer_object=backend, **special).save_pretrained(out_dir)
    return out_dir
