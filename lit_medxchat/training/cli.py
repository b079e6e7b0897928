"""`lit-medxchat fit|validate|test|predict --config CFG`: LightningCLI, the model chosen by the config.

A config names its model and DataModule by `class_path` (any LightningModule / LightningDataModule,
ours or the user's), so one command trains all three MedXChat models. `--config` also takes the name
of a shipped config (`tiny/view_classifier`, `demo/chat`, `paper/diffusion`, ...), resolved inside the
installed package, so configs work from any folder after `pip install`.
"""

from __future__ import annotations

import sys
from pathlib import Path

SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def shipped_config_names() -> list[str]:
    """Names like `tiny/chat` for every YAML shipped in the package."""
    return sorted(str(p.relative_to(SHIPPED_CONFIGS).with_suffix("")) for p in SHIPPED_CONFIGS.glob("*/*.yaml"))


def resolve_config(value: str) -> str:
    """Map a shipped config name to its file; leave real paths (and everything else) untouched."""
    if Path(value).exists():
        return value
    candidate = SHIPPED_CONFIGS / (value if value.endswith(".yaml") else f"{value}.yaml")
    if candidate.exists():
        return str(candidate)
    raise SystemExit(
        f"lit-medxchat: config {value!r} is neither a file nor a shipped config; "
        f"shipped: {', '.join(shipped_config_names())}"
    )


def _resolve_config_args(argv: list[str]) -> list[str]:
    resolved = list(argv)
    for i, arg in enumerate(resolved):
        if arg in ("--config", "-c") and i + 1 < len(resolved):
            resolved[i + 1] = resolve_config(resolved[i + 1])
        elif arg.startswith("--config="):
            resolved[i] = "--config=" + resolve_config(arg.split("=", 1)[1])
    return resolved


def _resolve_last_checkpoint(argv: list[str]) -> list[str]:
    """`--ckpt_path last` -> the newest *complete* checkpoint of the run (never a half-written one)."""
    if "--ckpt_path" not in argv and not any(a.startswith("--ckpt_path=") for a in argv):
        return argv
    from lit_medxchat.training.resume_args import resolve_ckpt_path_args

    return resolve_ckpt_path_args(argv)


def _cli_class():
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    class MedXChatCLI(LightningCLI):
        """LightningCLI whose checkpoints land in `<default_root_dir>/checkpoints` unless a config says otherwise.

        Configs cannot interpolate `trainer.default_root_dir` into a callback's `dirpath`; resolving it
        here keeps `--trainer.default_root_dir RUN` the one option that moves a whole run.
        """

        def parse_arguments(self, parser, args) -> None:
            """Parse exactly `args`, which `main` built from the command line (shipped config names resolved).

            LightningCLI warns whenever `args` is given while `sys.argv` holds arguments, because it cannot tell
            a Python call from a command line; here `args` *is* the command line, rewritten, so the warning
            would be printed on every run and mean nothing.
            """
            from jsonargparse import Namespace

            self.config = parser.parse_object(args) if isinstance(args, dict | Namespace) else parser.parse_args(args)

        def _parse_ckpt_path(self) -> None:
            """Keep the model the command line configures; do not re-parse the checkpoint's hyper-parameters into it.

            LightningCLI merges a single-file checkpoint's `hyper_parameters` into the `model` options before
            building it. Ours are nested option groups (`base.vae_config`, `llm.config`, ...), which that merge
            rejects ("Option 'base.vae_config.in_channels' is not accepted"), so `--ckpt_path` stopped every
            CXR-SD and chat resume from a DDP or single-process checkpoint (ZeRO directories were never
            re-parsed). The config given with `--config` is the run's definition; the checkpoint brings the
            weights, and loading them checks every trainable tensor's name and shape.
            """

        def before_instantiate_classes(self) -> None:
            """Checkpoints are read with `weights_only=True` unless `--weights_only false` is given.

            Lightning passes `weights_only=None` on to `torch.load`, whose default changed across torch
            releases; our checkpoints hold only tensors and plain values, so say it explicitly.
            """
            if self.subcommand is None:
                return
            arguments = self.config[self.subcommand]
            if "weights_only" in arguments and arguments["weights_only"] is None:
                arguments["weights_only"] = True

        def instantiate_classes(self) -> None:
            """Models that build in `configure_model` (the chat model) leave it to the Trainer, which calls it inside
            the strategy's context: under `ZeroStrategy`'s ZeRO-3 their frozen bases then load partitioned."""
            from lit_medxchat.models.zero3_build import deferred_builds

            with deferred_builds():
                super().instantiate_classes()

        def instantiate_trainer(self, **kwargs):
            trainer = super().instantiate_trainer(**kwargs)
            for callback in trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                    callback.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
            self._hand_resume_checkpoint_to_loggers(trainer)
            self._count_skipped_samples(trainer)
            self._seed_ranks_apart(trainer)
            return trainer

        def _count_skipped_samples(self, trainer) -> None:
            """Every run on our shards logs its skipped and truncated samples (`data/...`), whatever the config.

            A sample lost to a decode error or a report cut at `max_length` must show on the dashboard; a
            config that lists `SkippedSamplesLogger` itself keeps its own.
            """
            from datamodules.shard_datamodule import ShardDataModule, SkippedSamplesLogger

            if isinstance(getattr(self, "datamodule", None), ShardDataModule):
                _add_unless_present(trainer, SkippedSamplesLogger)

        def _seed_ranks_apart(self, trainer) -> None:
            """Every `fit` gives each rank its own random stream once the model is built (`PerRankSeed`)."""
            from lit_medxchat.training.rank_seed import PerRankSeed

            _add_unless_present(trainer, PerRankSeed)

        def _hand_resume_checkpoint_to_loggers(self, trainer) -> None:
            """Tell a `ContinuingWandbLogger` which checkpoint is resumed, so it reopens that checkpoint's W&B run.

            `ckpt_path` is a real path here once `--ckpt_path last` was resolved by `main`; a value Lightning
            still has to resolve itself (`last` without a known folder, `best`, `hpc`) is not handed over.
            """
            from lit_medxchat.training.wandb_run import ContinuingWandbLogger

            ckpt_path = self.config[self.subcommand].get("ckpt_path") if self.subcommand else None
            if not ckpt_path or not Path(ckpt_path).exists():
                return
            for logger in trainer.loggers:
                if isinstance(logger, ContinuingWandbLogger) and logger.resume_checkpoint is None:
                    logger.resume_checkpoint = ckpt_path

    return MedXChatCLI


def _add_unless_present(trainer, callback_class: type) -> None:
    """Append a default `callback_class()` to the trainer's callbacks unless the config lists one already."""
    if not any(isinstance(callback, callback_class) for callback in trainer.callbacks):
        trainer.callbacks.append(callback_class())


def build_cli(argv: list[str], run: bool = True):
    """Construct the LightningCLI (exposed for tests that parse every shipped config)."""
    from lightning.pytorch import LightningDataModule, LightningModule

    return _cli_class()(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=argv,
        run=run,
        auto_configure_optimizers=False,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = _resolve_last_checkpoint(_resolve_config_args(argv))
    from lit_medxchat.core.quiet import quiet_training

    with quiet_training():
        build_cli(argv)
    return 0
