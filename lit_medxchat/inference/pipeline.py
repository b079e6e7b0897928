"""MedXChat inference (paper Fig. 1): CXR image(s) + instruction -> answer, and CXR images when the
answer asks for them.

The chat model answers in text; when the answer holds `<Xray> prompt </Xray>`, each enclosed
prompt goes to a text-to-CXR model (`TextToCXR`, or any object with the same `generate`) and
the drawn images come back with the answer. Both are the plain `nn.Module` cores of the trained
models, loaded through `lit_medxchat.models.registry`: inference never imports Lightning, and a
checkpoint can only make it build one of our models.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from lit_medxchat.core.checkpoint_files import load_checkpoint_file
from lit_medxchat.core.xray_prompts import extract_xray_prompts
from lit_medxchat.models.registry import UnknownModelError, checkpoint_model_name, core_class
from lit_medxchat.training.completion import newest_checkpoint

if TYPE_CHECKING:
    from PIL import Image

    from lit_medxchat.models.medxchat import MedXChatModel

__all__ = [
    "CXRGenerator",
    "ChatResponse",
    "MedXChatPipeline",
    "load_image",
    "load_module",
    "newest_checkpoint",
    "preprocess_images",
]

log = logging.getLogger(__name__)



class CXRGenerator(Protocol):
    """What the pipeline needs from a text-to-CXR model (`TextToCXR` satisfies it)."""

    def generate(
        self, prompts: list[str], num_inference_steps: int = 20, guidance_scale: float = 3.0, seed: int = 0
    ) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1], one per prompt."""
        ...


@dataclass
class ChatResponse:
    """One answer.

    Attributes:
        answer: the generated text, `<Xray>` spans included (what the model said).
        xray_prompts: the text inside each `<Xray> ... </Xray>` span, in order.
        images: one (3, H, W) float tensor in [0, 1] per prompt drawn (empty without a CXR model).
        warnings: what did not go as asked (an unterminated `<Xray>` span, prompts not drawn).
    """

    answer: str
    xray_prompts: list[str] = field(default_factory=list)
    images: list[torch.Tensor] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def save_images(self, out_dir: str | Path, stem: str = "cxr") -> list[Path]:
        """Write `images` as 8-bit PNGs `<stem>-000.png`, ...; returns the paths."""
        from PIL import Image

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, image in enumerate(self.images):
            array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            path = out / f"{stem}-{index:03d}.png"
            Image.fromarray(array).save(path)
            paths.append(path)
        return paths


def load_image(image: Any) -> Image.Image:
    """A path or PIL image as an 8-bit grey PIL image (CXRs are grey; colour input is converted)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("L")
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist; pass an existing CXR file (JPEG/PNG).")
    with Image.open(path) as opened:
        return opened.convert("L")


def preprocess_images(
    images: Sequence[Any], image_size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Images -> (N, 3, image_size, image_size) floats, normalised with the tower's mean/std.

    The chat DataModule's evaluation path exactly: grey, letterboxed into a square (black borders),
    replicated to 3 channels, (x / 255 - mean) / std.
    """
    from datamodules.transforms import square_grey, to_rgb

    tensors = [
        to_rgb(square_grey(load_image(image), image_size), 1.0 / 255.0, 0.0, tuple(mean), tuple(std))
        for image in images
    ]
    if not tensors:
        return torch.zeros(0, 3, image_size, image_size)
    return torch.stack(tensors)


class MedXChatPipeline:
    """Chat with a trained MedXChat: `pipeline("Describe the X-ray.", images=["cxr.jpg"])`.

    Args:
        model: the chat model, a `MedXChatModel` or anything with its `tokenizer`, `num_image_tokens`,
            `vision_tower`, `device` and `generate` (eval mode is set here).
        diffusion: a text-to-CXR model (`TextToCXR` or anything with its `generate`); None to
            answer in text only (prompts are then reported in `ChatResponse.warnings`).
        max_length: prompt length cap in tokens; the oldest history turns are dropped to fit.
        num_inference_steps, guidance_scale, seed: passed to `diffusion.generate`.
    """

    def __init__(
        self,
        model: MedXChatModel,
        diffusion: CXRGenerator | None = None,
        max_length: int = 1024,
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        seed: int = 0,
    ) -> None:
        self.model = model.eval()
        self.diffusion = diffusion
        self.max_length = max_length
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.seed = seed

    def __call__(
        self,
        instruction: str,
        images: Sequence[Any] = (),
        history: list[dict] | None = None,
        **generation: Any,
    ) -> ChatResponse:
        """Answer `instruction` about `images` (0, 1 or 2: frontal then lateral) after `history`.

        `history` holds earlier `{"role": "user"|"assistant", "content": ...}` turns; the images
        belong to the first user turn. `generation` overrides `GenerationOptions` fields.
        """
        from lit_medxchat.core.conversation import encode_prompt

        turns = list(history or []) + [{"role": "user", "content": instruction}]
        prompt = encode_prompt(
            self.model.tokenizer,
            turns,
            num_images=len(images),
            num_image_tokens=self.model.num_image_tokens,
            max_length=self.max_length,
        )
        device = self.model.device
        input_ids = torch.tensor([prompt], device=device)
        pixel_values, image_mask = None, None
        if images:
            tower = self.model.vision_tower
            pixels = preprocess_images(images, tower.image_size, tower.image_mean, tower.image_std)
            pixel_values = pixels.unsqueeze(0).to(device)
            image_mask = torch.ones(1, len(images), dtype=torch.bool, device=device)
        (answer,) = self.model.generate(input_ids, torch.ones_like(input_ids), pixel_values, image_mask, **generation)
        return self._draw(answer)

    def _draw(self, answer: str) -> ChatResponse:
        prompts, warnings = extract_xray_prompts(answer)
        response = ChatResponse(answer=answer, xray_prompts=prompts, warnings=warnings)
        if not prompts:
            return response
        if self.diffusion is None:
            response.warnings.append(f"{len(prompts)} CXR prompt(s) not drawn: no text-to-CXR model was given")
            return response
        drawn = self.diffusion.generate(
            prompts, num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale, seed=self.seed
        )
        if drawn.ndim != 4 or drawn.shape[0] != len(prompts) or drawn.shape[1] != 3:
            raise ValueError(
                f"the text-to-CXR model returned shape {tuple(drawn.shape)} for {len(prompts)} prompts; "
                "expected (B, 3, H, W) in [0, 1]"
            )
        response.images = list(drawn.detach().cpu())
        return response

    @classmethod
    def from_run_dirs(
        cls, chat_run: str | Path, diffusion_run: str | Path | None = None, device: str = "cpu", **kwargs: Any
    ) -> MedXChatPipeline:
        """Load the newest checkpoints of a chat run (and a CXR-SD run) written by `lit-medxchat fit`.

        `chat_run` needs `checkpoints/*.ckpt` and `tokenizer/`; `diffusion_run` needs `checkpoints/*.ckpt`.
        Raises FileNotFoundError (missing folders or files), `UnsafeCheckpointError` (a checkpoint pickles
        objects), `UnknownModelError` (a checkpoint of a class that is not ours, or of the wrong model).
        """
        chat_run = Path(chat_run)
        tokenizer_dir = chat_run / "tokenizer"
        if not (tokenizer_dir / "tokenizer_config.json").is_file():
            raise FileNotFoundError(
                f"{tokenizer_dir} has no tokenizer: --run-dir must be the folder `lit-medxchat fit` wrote "
                "for the chat model (it saves RUN/tokenizer when training starts)."
            )
        checkpoint = newest_checkpoint(chat_run)
        model = load_module(checkpoint, device, expected=CHAT_MODELS, tokenizer=str(tokenizer_dir))
        diffusion = None
        if diffusion_run is not None:
            diffusion = load_module(newest_checkpoint(Path(diffusion_run)), device, expected=TEXT_TO_CXR_MODELS)
        log.info("chat model %s%s", checkpoint, f", CXR-SD {diffusion_run}" if diffusion_run else "")
        return cls(model, diffusion, **kwargs)


# Which of the registry's models may fill each role.
CHAT_MODELS = ("MedXChatLoRA",)
TEXT_TO_CXR_MODELS = ("CXRDiffusion",)


def load_module(
    checkpoint: str | Path, device: str = "cpu", expected: Sequence[str] | None = None, **overrides: Any
) -> Any:
    """The plain core of the model that wrote `checkpoint`, in eval mode on `device`.

    The checkpoint is read with `weights_only=True` and the class it names is looked up in
    `lit_medxchat.models.registry.MODEL_CORES`; anything else is refused before any import. `expected`
    limits the models accepted (e.g. `CHAT_MODELS`); `overrides` replace hyper-parameters.
    """
    path = Path(checkpoint)
    state = load_checkpoint_file(path, mmap=True)
    name = checkpoint_model_name(state, path)
    if expected is not None and name not in expected:
        raise UnknownModelError(f"{path} holds a {name}, not one of {list(expected)}: pick the run of that model")
    return core_class(name).from_checkpoint(state, map_location=device, **overrides).eval()
