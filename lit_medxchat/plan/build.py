"""The config and overrides `fit` would use -> the LightningModule on the meta device (no memory, no download).

The config is parsed by the same LightningCLI as `lit-medxchat fit` (shipped names, `--config FILE`, dotted
overrides), so a wrong field fails here as it would in the job. Only the model is instantiated, under
`torch.device("meta")`: parameters get shapes and dtypes but no storage, so a 7B model builds in seconds on
a laptop. `name_or_path` fields and missing tokenizers are first rewritten to the equivalent architecture
configs (`architectures`), so nothing is downloaded and no weights are read.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lit_medxchat.plan import architectures as arch


class PlanError(Exception):
    """A config the run would fail on: the message names the field and what is wrong."""


@dataclass
class PlannedConfig:
    """What the plan knows about a run: its model (on meta), and the trainer and data settings."""

    model: Any
    model_class: str
    trainer: dict[str, Any]
    data: dict[str, Any]
    data_class: str
    notes: list[str] = field(default_factory=list)
    # Top-level parts whose frozen weights the model loads straight into ZeRO-3 partitions (read before the
    # hub ids were rewritten to architectures).
    partitioned_parts: frozenset[str] = frozenset()


def parse_config(argv: list[str]) -> dict[str, Any]:
    """`--config CFG [overrides]` -> the merged config as a dict, exactly as `lit-medxchat fit` parses it."""
    from lightning.pytorch import LightningDataModule, LightningModule

    from lit_medxchat.training.cli import _cli_class, _resolve_config_args

    class ParseOnlyCLI(_cli_class()):
        def instantiate_classes(self) -> None:  # the plan instantiates the model itself, on meta
            self.config_init = None

    try:
        cli = ParseOnlyCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=_resolve_config_args(argv),
            run=False,
            auto_configure_optimizers=False,
            parser_kwargs={"exit_on_error": False},
        )
    except (ValueError, TypeError, SystemExit) as error:
        raise PlanError(f"config does not parse: {error}") from error
    return cli.config.as_dict()


def rewrite_for_plan(init_args: dict[str, Any], scratch: Path) -> list[str]:
    """Replace `name_or_path` fields and unloadable tokenizers by architecture configs, in place.

    Returns notes for the report (what was stood in for). Fields follow our models' signatures:
    `tokenizer`, `llm.name_or_path`, `vision.name_or_path` (MedXChatLoRA, LMBasePretraining),
    `base.name_or_path` with `base.vae_config` (CXRDiffusion), a top-level `name_or_path` with `config`
    (classifiers).
    """
    notes: list[str] = []
    tokenizer = init_args.get("tokenizer")
    if isinstance(tokenizer, str) and not Path(tokenizer).exists():
        facts, note = arch.tokenizer_facts(tokenizer)
        init_args["tokenizer"] = str(arch.write_stand_in_tokenizer(facts, scratch / "tokenizer"))
        notes.append(note or f"tokenizer {tokenizer!r}: a stand-in with its {facts['vocab_size']} tokens")
    for group, reader in (("llm", arch.architecture_config), ("vision", arch.vision_config)):
        options = init_args.get(group)
        if isinstance(options, dict) and options.get("name_or_path"):
            name = options["name_or_path"]
            options["config"] = reader(name, f"model.init_args.{group}.name_or_path")
            options["name_or_path"] = None
            notes.append(f"{group}: architecture of {name!r} (no weights read)")
    sd_base = init_args.get("base")
    if isinstance(sd_base, dict) and sd_base.get("name_or_path") and "vae_config" in sd_base:
        notes.append(_rewrite_sd_base(sd_base))
    name = init_args.get("name_or_path")
    if name and "config" in init_args:
        init_args["config"] = arch.architecture_config(name, "model.init_args.name_or_path")
        init_args["name_or_path"] = None
        notes.append(f"backbone: architecture of {name!r} (no weights read)")
    return notes


def _rewrite_sd_base(sd_base: dict[str, Any]) -> str:
    """CXR-SD's `base` group: the SD folder/hub id becomes its three architecture configs, in place."""
    name = sd_base["name_or_path"]
    field_name = "model.init_args.base.name_or_path"
    for part in ("vae", "unet", "text_encoder"):
        config = arch.architecture_config(name, field_name, subfolder=part)
        config.pop("model_type", None)
        sd_base[f"{part}_config"] = config
    tokenizer_name = sd_base.get("tokenizer_name_or_path")
    if tokenizer_name is None or not Path(tokenizer_name).exists():
        facts = arch.shipped_index().get(name, {}).get("tokenizer")
        vocab = (facts or {}).get("vocab_size") or sd_base["text_encoder_config"].get("vocab_size")
        sd_base["tokenizer_name_or_path"] = None
        sd_base["tokenizer_vocab_size"] = int(vocab)
    sd_base["name_or_path"] = None
    return f"SD parts: architecture of {name!r} (no weights read)"


@contextlib.contextmanager
def _value_free_init() -> Iterator[None]:
    """Stand in for the few constructor helpers that read weight *values* (impossible on meta).

    `medxchat.embedding_rms` sets the adapter's initial output gain from the LLM's embedding RMS: a value,
    never a shape, so the plan uses 1.0 for meta weights and leaves real weights to the original.
    """
    from lit_medxchat.models import medxchat

    original = getattr(medxchat, "embedding_rms", None)
    if original is None:
        yield
        return

    def embedding_rms(llm: Any) -> float:
        return 1.0 if llm.get_input_embeddings().weight.is_meta else original(llm)

    medxchat.embedding_rms = embedding_rms
    try:
        yield
    finally:
        medxchat.embedding_rms = original


def instantiate_on_meta(model_config: dict[str, Any], device: str = "meta") -> Any:
    """Instantiate `{"class_path", "init_args"}` as LightningCLI would, with every tensor on `device`.

    `device="cpu"` builds the real model from the same rewritten config (tests compare the two).
    """
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningModule, "model", required=True)
    namespace = parser.parse_object({"model": model_config})
    with torch.device(device), _value_free_init():
        return parser.instantiate_classes(namespace).model


def build_planned(argv: list[str]) -> PlannedConfig:
    """Parse `argv` like `fit`, rewrite hub ids to architectures and build the model on meta."""
    config = parse_config(argv)
    model_config = copy.deepcopy(config.get("model") or {})
    if not model_config.get("class_path"):
        raise PlanError("the config names no model: set model.class_path")
    init_args = model_config.setdefault("init_args", {})
    partitioned = _parts_loaded_partitioned(model_config["class_path"], init_args)
    with tempfile.TemporaryDirectory(prefix="lit-medxchat-plan-") as scratch:
        try:
            notes = rewrite_for_plan(init_args, Path(scratch))
            model = instantiate_on_meta(model_config)
        except PlanError:
            raise
        except (ValueError, TypeError, KeyError, RuntimeError, OSError) as error:
            raise PlanError(f"model {model_config['class_path']} does not build: {error}") from error
    data = config.get("data") or {}
    return PlannedConfig(
        model=model,
        model_class=model_config["class_path"],
        trainer=config.get("trainer") or {},
        data=dict(data.get("init_args") or {}),
        data_class=str(data.get("class_path") or ""),
        notes=notes,
        partitioned_parts=partitioned,
    )


def _parts_loaded_partitioned(class_path: str, init_args: dict[str, Any]) -> frozenset[str]:
    """The model class's `parts_loaded_partitioned(init_args)`, where it has one (the chat model)."""
    import importlib

    module_name, _, class_name = class_path.rpartition(".")
    try:
        model_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        return frozenset()  # instantiation reports the bad class path
    reader = getattr(model_class, "parts_loaded_partitioned", None)
    return frozenset(reader(init_args)) if reader is not None else frozenset()
