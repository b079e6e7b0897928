"""One training micro-batch on the meta device: the activations autograd saves, and the FLOPs of the step.

Activations are measured rather than derived from per-architecture formulas: a `saved_tensors_hooks` pair
records every tensor autograd keeps for backward during the real forward code (LLaMA with LoRA, the
CLIP tower and adapter, the SD UNet with its ControlNet copy, ...), deduplicated by storage and with
parameters left out. Each save is attributed to the innermost repeated block running (an element of an
`nn.ModuleList`), which gives the activation-checkpointing figure: block inputs kept, one block's
activations alive at a time in backward. FLOPs are counted by `torch.utils.flop_counter` over forward and
backward. All tensors are meta, so a 7B step costs no memory and a few seconds.

Per-model steps mirror the models' `training_step` with the configured shapes; they call the models' own
parts (`encode_images`, `predict_noise`, `compute_loss`, ...), so a shape that does not match fails here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class StepShapes:
    """Micro-batch shapes of one GPU: batch size, sequence length, image size, images per sample."""

    batch_size: int
    seq_len: int | None = None
    image_size: int | None = None
    images_per_sample: int = 1
    device: str = "meta"  # "cpu" runs the same step for real (tests compare the two)


@dataclass
class ProbeResult:
    """Saved activations (bytes) with and without checkpointing, and FLOPs of forward + backward."""

    activation_bytes: int
    checkpointed_bytes: int
    flops: int
    blocks: int
    largest_block_bytes: int
    outside_blocks_bytes: int
    notes: list[str] = field(default_factory=list)


def _zeros(shapes: StepShapes, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype, device=shapes.device)


def chat_step(model: Any, shapes: StepShapes) -> torch.Tensor:
    """MedXChatLoRA.forward with the image embeddings in the first `num_image_tokens` positions per image."""
    b, length = shapes.batch_size, shapes.seq_len
    tokens = model.num_image_tokens * shapes.images_per_sample
    if length is None or length <= tokens:
        raise ValueError(
            f"data.init_args.max_length={length} leaves no text after {tokens} image tokens per sample"
        )
    size = shapes.image_size or model.vision_tower.image_size
    ids = _zeros(shapes, b, length, dtype=torch.long)
    embeds = model.llm.get_input_embeddings()(ids)
    pixels = _zeros(shapes, b * shapes.images_per_sample, 3, size, size)
    visual = model.encode_images(pixels).reshape(b, tokens, -1).to(embeds.dtype)
    embeds = torch.cat([visual, embeds[:, tokens:]], dim=1)
    return model.llm(inputs_embeds=embeds, labels=ids).loss


def lm_base_step(model: Any, shapes: StepShapes) -> torch.Tensor:
    ids = _zeros(shapes, shapes.batch_size, shapes.seq_len, dtype=torch.long)
    return model.llm(input_ids=ids, labels=ids).loss


def diffusion_step(model: Any, shapes: StepShapes) -> torch.Tensor:
    """CXRDiffusion.diffusion_loss with meta text ids (the real step tokenises strings on the CPU)."""
    b, size = shapes.batch_size, shapes.image_size or model.hparams.image_size
    text_len = model.text_encoder.config.max_position_embeddings
    ids = _zeros(shapes, b, text_len, dtype=torch.long)
    with torch.no_grad():
        text_states = model.text_encoder(ids)[0]
    latents = model.encode_images(_zeros(shapes, b, model.vae.config.in_channels, size, size))
    noise = torch.randn_like(latents)
    timesteps = _zeros(shapes, b, dtype=torch.long)
    noisy = model.noise_schedule.add_noise(latents, noise, timesteps)
    prediction = model.predict_noise(noisy, timesteps, text_states, torch.ones_like(ids))
    return F.mse_loss(prediction, noise)


def sd_base_step(model: Any, shapes: StepShapes) -> torch.Tensor:
    """SDBasePretraining's first (VAE) phase; its UNet phase tokenises an empty prompt on the CPU."""
    size = shapes.image_size or model.hparams.image_size
    return model.vae_loss(_zeros(shapes, shapes.batch_size, model.vae.config.in_channels, size, size))


def classifier_step(model: Any, shapes: StepShapes) -> torch.Tensor:
    b, size = shapes.batch_size, shapes.image_size or model.image_size
    batch = {
        "pixel_values": _zeros(shapes, b, 3, size, size),
        "view": _zeros(shapes, b, dtype=torch.long),
        "labels": _zeros(shapes, b, 14),
        "label_mask": _zeros(shapes, b, 14),
    }
    return model.compute_loss(batch)[0]


# Class name -> step. Other modules: pass a step to `probe_step` (benchmarks/gpu_check.py does).
STEPS: dict[str, Callable[[Any, StepShapes], torch.Tensor]] = {
    "MedXChatLoRA": chat_step,
    "LMBasePretraining": lm_base_step,
    "CXRDiffusion": diffusion_step,
    "SDBasePretraining": sd_base_step,
    "ViewClassifier": classifier_step,
    "FindingsClassifier": classifier_step,
}


def _blocks(module: nn.Module) -> list[nn.Module]:
    """Innermost repeated blocks: elements of a `ModuleList` of one composite type (decoder layers, ResNet
    blocks, transformer blocks) that hold no such list themselves. Mixed lists such as `[Linear, Dropout]`
    are parts of a block, not blocks."""

    def is_block_list(m: nn.Module) -> bool:
        return (
            isinstance(m, nn.ModuleList)
            and len(m) > 0
            and len({type(e) for e in m}) == 1
            and any(True for _ in m[0].children())
        )

    elements = [child for m in module.modules() if is_block_list(m) for child in m]
    return [e for e in elements if not any(is_block_list(m) for m in e.modules())]


def probe_step(module: nn.Module, step: Callable[[], torch.Tensor]) -> ProbeResult:
    """Run `step()` (returns the loss) and its backward on meta tensors, recording saves and FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    weights = {t.untyped_storage()._cdata for t in (*module.parameters(), *module.buffers())}
    saved: dict[int, tuple[int, int]] = {}  # storage -> (bytes, block index or -1)
    block_inputs: dict[int, int] = {}
    stack: list[int] = []
    handles = []
    for index, block in enumerate(_blocks(module)):

        def enter(_m, args, _i=index):
            stack.append(_i)
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if first is not None and first.requires_grad:
                block_inputs[_i] = first.numel() * first.element_size()

        def leave(_m, _args, _output) -> None:
            stack.pop()

        handles.append(block.register_forward_pre_hook(enter))
        handles.append(block.register_forward_hook(leave))

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key not in weights and key not in saved:
            saved[key] = (storage.nbytes(), stack[-1] if stack else -1)
        return tensor

    counter = FlopCounterMode(display=False)
    try:
        with counter:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                loss = step()
            loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    per_block: dict[int, int] = {}
    for nbytes, block in saved.values():
        per_block[block] = per_block.get(block, 0) + nbytes
    outside = per_block.pop(-1, 0)
    largest = max(per_block.values(), default=0)
    checkpointed = outside + sum(block_inputs.get(i, 0) for i in per_block) + largest
    return ProbeResult(
        activation_bytes=outside + sum(per_block.values()),
        checkpointed_bytes=min(checkpointed, outside + sum(per_block.values())),
        flops=int(counter.get_total_flops()),
        blocks=len(per_block),
        largest_block_bytes=largest,
        outside_blocks_bytes=outside,
    )


class MetaAutocast(torch.overrides.TorchFunctionMode):
    """Autocast for meta tensors (torch's autocast has no meta kernels): matmuls and convolutions run in the
    low-precision dtype, normalisations, softmax and losses in fp32, as CUDA autocast's op lists say.

    The casts happen above autograd, so autograd saves the cast copies, as under real autocast.
    """

    _LOW = {
        F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose2d, torch.matmul, torch.mm, torch.bmm,
        torch.addmm, torch.baddbmm, F.scaled_dot_product_attention, torch.Tensor.__matmul__,
    }
    _FP32 = {
        F.layer_norm, F.group_norm, F.softmax, F.log_softmax, F.cross_entropy, F.mse_loss, F.l1_loss,
        F.binary_cross_entropy_with_logits, torch.Tensor.softmax, torch.softmax,
    }

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = self.dtype if func in self._LOW else torch.float32 if func in self._FP32 else None
        if target is not None:
            def cast(value):
                if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != target:
                    return value.to(target)
                return value

            args = tuple(cast(a) for a in args)
            kwargs = {k: cast(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def _checkpointed_modules(model: nn.Module) -> list[nn.Module]:
    """Modules that recompute in backward: transformers' layers and diffusers' blocks carry this flag."""
    return [module for module in model.modules() if getattr(module, "gradient_checkpointing", False) is True]


def gradient_checkpointing_enabled(model: nn.Module) -> bool:
    """Whether the built model recomputes blocks in backward (`llm.gradient_checkpointing`,
    `base.gradient_checkpointing`)."""
    return bool(_checkpointed_modules(model))


@contextlib.contextmanager
def _checkpointing_off(model: nn.Module) -> Iterator[None]:
    """The probe measures every saved tensor and derives the checkpointed figure itself; a real recompute on the
    meta device cannot be checked by torch (its metadata check fails), so the flags are off while it runs."""
    switched = _checkpointed_modules(model)
    for module in switched:
        module.gradient_checkpointing = False
    try:
        yield
    finally:
        for module in switched:
            module.gradient_checkpointing = True


def probe_model(model: nn.Module, shapes: StepShapes, compute_dtype: torch.dtype | None) -> ProbeResult | None:
    """Probe a shipped model class with its step (None when there is none), under `MetaAutocast(compute_dtype)`."""
    step = STEPS.get(type(model).__name__)
    if step is None:
        return None
    model.train()

    def run_step() -> torch.Tensor:
        if compute_dtype is None:
            return step(model, shapes)
        with MetaAutocast(compute_dtype):
            return step(model, shapes)

    with _checkpointing_off(model):
        return probe_step(model, run_step)
