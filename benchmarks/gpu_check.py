"""GPU check: paper-shape training steps, timed through the same Trainer + strategy + throughput callback we ship.

1. LLM-LoRA: a LLaMA-7B-width decoder (hidden 4096, 32 heads, MLP 11008, vocab 32000) cut to `--llm-layers`
   of its 32 layers, LoRA r=16 on q/k/v/o, bf16-mixed, DeepSpeed ZeRO-2 (`cluster/deepspeed/zero2.json`) on one
   device; prints tokens/s and MFU (FLOPs counted on the first step by `MedXChatThroughput`).
2. CXR-SD: a Stable-Diffusion-1.5-shape UNet + VAE at 512 px (64x64 latents), frozen, with a trainable
   ControlNet copy of the UNet encoder (`ControlNetModel.from_unet`), bf16-mixed; prints images/s and MFU.

3. ZeRO-3 validation-time decoding on 2 GPUs (NCCL): the chat model with every parameter partitioned, one rank
   decoding 1 token without an image and the other 6 tokens with two images, through the DeepSpeed engine as
   Lightning calls it (`tests/distributed/zero3_generate_run.py`, the CI test's script, under `torchrun`). It must
   return on both ranks (a hang is killed after 3 minutes with every rank's stack); skipped with fewer than 2 GPUs.

Weights are random (built from configs): speed does not depend on their values.

    python benchmarks/gpu_check.py                 # on a GPU (a few minutes)
    python benchmarks/gpu_check.py --tiny          # same code path on CPU with tiny shapes (a check, not a figure)
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lit_medxchat.training.strategies import deepspeed_strategy
from lit_medxchat.training.throughput import MedXChatThroughput


class MetricsTap(Callback):
    """Keeps the last throughput metrics Lightning logged (rank 0), and wall time of the timed steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.metrics: dict[str, float] = {}
        self.t0: float | None = None
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.steps += 1
        self.metrics = {k: float(v) for k, v in trainer.logged_metrics.items() if k.startswith("train/")}

    def seconds_per_step(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return (time.perf_counter() - self.t0) / max(self.steps, 1)


class LoRAStep(LightningModule):
    """Causal-LM loss of a LoRA-wrapped LLaMA-shape model on random tokens."""

    def __init__(self, config: dict[str, Any], lora_rank: int) -> None:
        super().__init__()
        from peft import LoraConfig, get_peft_model
        from transformers import LlamaConfig, LlamaForCausalLM

        llm = LlamaForCausalLM(LlamaConfig(**config))
        self.llm = get_peft_model(llm, LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank,
                                                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.llm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["input_ids"])
        self.log("loss", out.loss)
        return out.loss

    def configure_optimizers(self):
        return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=1e-4)


class ControlNetStep(LightningModule):
    """Noise-prediction loss of a frozen SD UNet steered by a trainable ControlNet copy, VAE encode included."""

    def __init__(self, unet_config: dict[str, Any], vae_config: dict[str, Any], text_dim: int) -> None:
        super().__init__()
        from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel

        self.vae = AutoencoderKL(**vae_config).requires_grad_(False)
        self.unet = UNet2DConditionModel(**unet_config).requires_grad_(False)
        self.controlnet = ControlNetModel.from_unet(self.unet)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000)
        self.text_dim = text_dim

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.vae.eval()
        self.unet.eval()
        with torch.no_grad():
            latents = self.vae.encode(batch["pixel_values"]).latent_dist.sample() * 0.18215
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (latents.shape[0],), device=latents.device)
        noisy = self.scheduler.add_noise(latents, noise, t)
        hint = torch.nn.functional.interpolate(batch["pixel_values"], scale_factor=1.0)
        down, mid = self.controlnet(noisy, t, encoder_hidden_states=batch["text"], controlnet_cond=hint,
                                    return_dict=False)
        pred = self.unet(noisy, t, encoder_hidden_states=batch["text"], down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.controlnet.parameters(), lr=1e-5)


def random_batches(make: Any, count: int) -> list[dict[str, torch.Tensor]]:
    return [make() for _ in range(count)]


def run(module: LightningModule, batches: list, strategy: Any, precision: str, count_tokens: bool,
        available_flops: float | None, warmup: int, save_dir: str) -> dict[str, float]:
    """Fit `module` on `batches`; the throughput metrics need a logger (Lightning drops them without one)."""
    from lightning.pytorch.loggers import CSVLogger

    tap = MetricsTap(warmup)
    throughput = MedXChatThroughput(count_tokens=count_tokens, available_flops=available_flops,
                                    window_size=max(2, len(batches) - warmup))
    trainer = Trainer(accelerator="auto", devices=1, strategy=strategy, precision=precision, max_steps=len(batches),
                      logger=CSVLogger(save_dir), enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, log_every_n_steps=1, callbacks=[throughput, tap])
    samples = [{k: v[i] for k, v in batch.items()} for batch in batches for i in range(len(next(iter(batch.values()))))]
    batch_size = len(samples) // len(batches)  # DeepSpeed reads the micro-batch size from the loader
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(samples, batch_size=batch_size))
    return {"seconds_per_step": tap.seconds_per_step(), "flops_per_batch": float(throughput.measured_flops_per_batch
                                                                                 or 0), **tap.metrics}


# The strategy of the LLM run as `lit-medxchat plan` reads it (the same shipped ZeRO-2 JSON).
ZERO2_PLAN = {"class_path": "lightning.pytorch.strategies.DeepSpeedStrategy", "init_args": {"config": "zero2"}}


def plan_prediction(make_module: Any, batch: dict[str, torch.Tensor], strategy: Any, precision: str,
                    mfu: float, peak_tflops: float | None) -> dict[str, float]:
    """`lit-medxchat plan`'s figures for the same module, batch, strategy and precision (no reserve term).

    The module is rebuilt on the meta device and its `training_step` probed there: model-state bytes,
    saved activations and FLOPs, so the measured peak memory, FLOPs and step time can be divided by them.
    """
    from lit_medxchat.plan.memory import LOW_PRECISIONS, model_state_bytes, strategy_plan
    from lit_medxchat.plan.params import count_parameters
    from lit_medxchat.plan.probe import MetaAutocast, probe_step

    with torch.device("meta"):
        module = make_module()
    counts = count_parameters(module)
    states = model_state_bytes(counts, strategy_plan(strategy, 1), precision, 1, 1).model_states
    # An all-ones attention mask is the same as none; masks are value-checked (`.item()`), impossible on meta.
    meta_batch = {k: None if k == "attention_mask" else torch.empty_like(v, device="meta") for k, v in batch.items()}

    def step() -> torch.Tensor:
        if precision in LOW_PRECISIONS:
            with MetaAutocast(torch.bfloat16):
                return module.training_step(meta_batch, 0)
        return module.training_step(meta_batch, 0)

    probe = probe_step(module, step)
    prediction = {"peak_memory_gb": (states + probe.activation_bytes) / 2**30, "flops_per_batch": float(probe.flops)}
    if peak_tflops:
        prediction["seconds_per_step"] = probe.flops / (peak_tflops * 1e12 * mfu)
    return prediction


def with_ratios(report: dict[str, Any], prediction: dict[str, float]) -> None:
    """Put the plan's prediction and measured/predicted ratios beside the measured figures."""
    report["plan"] = prediction
    pairs = {"max_memory_gb": "peak_memory_gb", "flops_per_batch": "flops_per_batch",
             "seconds_per_step": "seconds_per_step"}
    report["measured_over_plan"] = {k: report[k] / prediction[v] for k, v in pairs.items()
                                    if report.get(k) and prediction.get(v)}


def zero3_generation(tiny: bool, out_dir: str) -> dict[str, Any]:
    """Section 3: run the ZeRO-3 decoding script on 2 ranks (2 GPUs, or 2 CPU processes with `--tiny`)."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    gpus = torch.cuda.device_count()
    if not tiny and gpus < 2:
        return {"skipped": f"needs 2 GPUs, found {gpus}"}
    from lit_medxchat.core.tokenizer import train_tokenizer

    script = Path(__file__).resolve().parents[1] / "tests" / "distributed" / "zero3_generate_run.py"
    work = Path(tempfile.mkdtemp(prefix="zero3-generation-", dir=out_dir if Path(out_dir).is_dir() else None))
    texts = ["findings: small left pleural effusion. impression: effusion.", "PA view of the chest was obtained.",
             "Generate a report of this chest x-ray.", "the lungs are clear. no pneumothorax."] * 20
    train_tokenizer(texts, vocab_size=300, out_dir=work / "tokenizer")
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="" if tiny else os.environ.get(
        "CUDA_VISIBLE_DEVICES", "0,1"))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), str(work / "tokenizer"), str(work)], env=env, capture_output=True, text=True,
                          timeout=400)
    result: dict[str, Any] = {"returncode": done.returncode, "seconds": time.perf_counter() - started}
    if done.returncode != 0:
        result["stderr_tail"] = done.stderr[-3000:]
        return result
    ranks = [json.loads((work / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    result.update(devices=[r["device"] for r in ranks], partitioned=all(r["partitioned"] for r in ranks),
                  new_tokens=[r["lengths"] for r in ranks], decode_seconds=[r["decode_seconds"] for r in ranks],
                  fingerprint_gathered=all(r["fingerprints"][0] == r["fingerprints"][1] for r in ranks))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU: checks the script, measures nothing")
    parser.add_argument("--llm-layers", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--llm-batch", type=int, default=8)
    parser.add_argument("--sd-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default="runs/gpu_check", help="folder for the CSV logs of the two runs")
    parser.add_argument("--mfu", type=float, default=0.35, help="MFU the plan's step-time prediction assumes")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak bf16 TFLOP/s of the GPU for the plan's step-time prediction (e.g. 989 for H100)")
    args = parser.parse_args()
    torch.manual_seed(0)
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda:
        torch.set_num_threads(1)
    cpu_peak = 1e11 if not cuda else None  # nominal, only so the CPU check exercises the MFU path

    if args.tiny:
        llm = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4,
                   num_hidden_layers=2, vocab_size=512, max_position_embeddings=256)
        seq, llm_batch, sd_batch, size = 64, 2, 1, 64
        unet = dict(sample_size=8, block_out_channels=(32, 64),
                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, layers_per_block=1,
                    attention_head_dim=8, norm_num_groups=8)
        vae = dict(block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                   up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=8)
        text_dim, steps, warmup = 32, 4, 1
    else:
        llm = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                   num_hidden_layers=args.llm_layers, vocab_size=32000, max_position_embeddings=4096)
        seq, llm_batch, sd_batch, size = args.seq_len, args.llm_batch, args.sd_batch, 512
        unet = dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                    layers_per_block=2, attention_head_dim=8)
        vae = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                   up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4)
        text_dim, steps, warmup = 768, args.steps, args.warmup

    def token_batch() -> dict[str, torch.Tensor]:
        ids = torch.randint(0, llm["vocab_size"], (llm_batch, seq))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def image_batch() -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.rand(sd_batch, 3, size, size) * 2 - 1,
                "text": torch.randn(sd_batch, 77, text_dim)}

    report: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "tiny": args.tiny}
    lora = run(LoRAStep(llm, lora_rank=16), random_batches(token_batch, steps), deepspeed_strategy("zero2"),
               "bf16-mixed", True, cpu_peak, warmup, args.out)
    report["llm_lora"] = {"layers": llm["num_hidden_layers"], "hidden": llm["hidden_size"], "seq_len": seq,
                          "batch": llm_batch, "tokens_per_sec": llm_batch * seq / lora["seconds_per_step"],
                          "mfu": lora.get("train/device/mfu"), "flops_per_batch": lora["flops_per_batch"],
                          "seconds_per_step": lora["seconds_per_step"]}
    if cuda:
        report["llm_lora"]["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    with_ratios(report["llm_lora"], plan_prediction(lambda: LoRAStep(llm, lora_rank=16), token_batch(),
                                                    ZERO2_PLAN, "bf16-mixed", args.mfu, args.peak_tflops))
    sd = run(ControlNetStep(unet, vae, text_dim), random_batches(image_batch, steps), "auto", "bf16-mixed", False,
             cpu_peak, warmup, args.out)
    report["sd_controlnet"] = {"resolution": size, "batch": sd_batch,
                               "images_per_sec": sd_batch / sd["seconds_per_step"], "mfu": sd.get("train/device/mfu"),
                               "flops_per_batch": sd["flops_per_batch"],
                               "seconds_per_step": sd["seconds_per_step"]}
    if cuda:
        report["sd_controlnet"]["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    with_ratios(report["sd_controlnet"], plan_prediction(lambda: ControlNetStep(unet, vae, text_dim), image_batch(),
                                                         "auto", "bf16-mixed", args.mfu, args.peak_tflops))
    report["zero3_generation"] = zero3_generation(args.tiny, args.out)
    print(json.dumps(report, indent=1))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
