"""`lit-medxchat plan`: every shipped config plans offline; tiny plans match what is built and allocated on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lit_medxchat.plan.architectures import write_stand_in_tokenizer
from lit_medxchat.plan.build import instantiate_on_meta, parse_config, rewrite_for_plan
from lit_medxchat.plan.cli import main
from lit_medxchat.plan.memory import StrategyPlan, model_state_bytes
from lit_medxchat.plan.params import count_parameters
from lit_medxchat.plan.probe import StepShapes, chat_step
from lit_medxchat.training.cli import shipped_config_names


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("paper/") else n for n in shipped_config_names()]
)
def test_every_shipped_config_plans_at_its_own_device_count(name: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "plan.json"
    assert main(["--config", name, "--json", str(out)]) == 0, capsys.readouterr().err
    plan = json.loads(out.read_text())
    assert plan["parameters"]["trainable"] > 0
    assert plan["activation_bytes"] > 0 and plan["flops_per_micro_batch"] > 0
    assert plan["peak_bytes"] <= plan["gpu_memory_bytes"]
    assert "peak" in capsys.readouterr().out


def test_paper_chat_on_2x8_gpus_with_zero2(tmp_path: Path, capsys) -> None:
    out = tmp_path / "plan.json"
    argv = ["--config", "paper/chat", "--trainer.devices", "8", "--trainer.num_nodes", "2",
            "--trainer.strategy", "lightning.pytorch.strategies.DeepSpeedStrategy",
            "--trainer.strategy.init_args.config", "cluster/deepspeed/zero2.json", "--json", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    plan = json.loads(out.read_text())
    assert 6.9e9 < plan["parameters"]["total"] < 7.3e9
    assert plan["lora_targets"] == {"q_proj": list(range(32)), "v_proj": list(range(32))}
    lora = next(p for p in plan["parameters"]["parts"] if p["name"] == "llm")["trainable"]
    # LoRA r=16 on q/v (4096 -> 4096) of 32 layers, plus the 3 MedXChat token rows of the embedding and LM head.
    assert lora == 32 * 2 * 16 * (4096 + 4096) + 2 * 3 * 4096
    assert plan["world_size"] == 16
    # ZeRO-2 with bf16: 16-bit weights on every GPU; fp32 master, grads and moments sharded over 16 GPUs.
    trainable = plan["parameters"]["trainable"]
    assert plan["gpu_bytes"]["trainable weights"] == 2 * trainable
    assert plan["gpu_bytes"]["optimizer: fp32 master + AdamW m, v"] == 12 * trainable // 16
    assert plan["gpu_bytes"]["fp32 gradient partition (at the step)"] == 4 * trainable // 16
    # DeepSpeed's estimator agrees, to the bytes lost by rounding each of our terms down separately.
    assert abs(plan["ours_for_deepspeed_estimate"] - plan["deepspeed_estimate"]["gpu"]) <= 3


def test_unmatched_lora_target_is_an_error_naming_it(capsys) -> None:
    argv = ["--config", "tiny/chat", "--model.init_args.lora.target_modules", "[q_proj, qkv_proj]"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "lora.target_modules" in err and "qkv_proj" in err


def test_a_sequence_too_short_for_the_image_tokens_is_an_error_naming_the_field(capsys) -> None:
    assert main(["--config", "tiny/chat", "--data.init_args.max_length", "4"]) == 1
    assert "data.init_args.max_length=4" in capsys.readouterr().err


def test_a_run_that_does_not_fit_exits_3(capsys) -> None:
    assert main(["--config", "tiny/chat", "--gpu-memory", "1MB", "--reserve-memory", "0"]) == 3
    assert "exceeds --gpu-memory" in capsys.readouterr().err


def _tiny_chat_config(tmp_path: Path) -> dict:
    tokenizer = write_stand_in_tokenizer({"vocab_size": 500}, tmp_path / "tokenizer")
    config = parse_config(["--config", "tiny/chat", "--model.init_args.tokenizer", str(tokenizer)])
    rewrite_for_plan(config["model"]["init_args"], tmp_path)
    return config


def test_tiny_plan_equals_the_built_model_and_what_the_optimizer_allocates(tmp_path: Path) -> None:
    config = _tiny_chat_config(tmp_path)
    planned = count_parameters(instantiate_on_meta(config["model"]))
    model = instantiate_on_meta(config["model"], device="cpu")
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert planned.trainable == sum(p.numel() for p in trainable) == model.trainable_parameter_count()
    assert planned.frozen == sum(p.numel() for p in frozen) > 0

    # One real training step on CPU, exactly as the plan's probe runs it on meta.
    data = config["data"]["init_args"]
    shapes = StepShapes(data["batch_size"], data["max_length"], data["image_size"], device="cpu")
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    chat_step(model, shapes).backward()
    optimizer.step()
    measured = {
        "frozen weights": sum(p.numel() * p.element_size() for p in frozen),
        "trainable weights": sum(p.numel() * p.element_size() for p in trainable),
        "gradients": sum(p.grad.numel() * p.grad.element_size() for p in trainable),
        "optimizer states (AdamW m, v)": sum(
            t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values()
        ),
    }
    predicted = model_state_bytes(planned, StrategyPlan("single"), "32-true", devices=1, num_nodes=1).gpu
    assert predicted == measured



@pytest.mark.parametrize("name,option", [("tiny/chat", "--model.init_args.llm.gradient_checkpointing"),
                                         ("tiny/diffusion", "--model.init_args.base.gradient_checkpointing")])
def test_gradient_checkpointing_in_the_config_decides_the_verdict(name: str, option: str, tmp_path: Path,
                                                                   capsys) -> None:
    """Proves: with the LLM's or the UNet's checkpointing switched on, the plan still probes the step (a recompute
    on the meta device would fail), says it is on, and judges the fit by the checkpointed peak: a GPU between the
    two peaks fits only with checkpointing."""
    out = tmp_path / "plan.json"
    assert main(["--config", name, "--json", str(out), "--reserve-memory", "0"]) == 0, capsys.readouterr().err
    plain = json.loads(out.read_text())
    assert plain["gradient_checkpointing"] is False
    between = (plain["peak_bytes"] + plain["peak_bytes_checkpointed"]) // 2
    assert plain["peak_bytes_checkpointed"] < between < plain["peak_bytes"]
    argv = ["--config", name, "--json", str(out), "--reserve-memory", "0", "--gpu-memory", f"{between}b"]
    assert main(argv) == 3
    capsys.readouterr()
    assert main([*argv, option, "true"]) == 0, capsys.readouterr().err
    assert "gradient checkpointing in this config               on" in capsys.readouterr().out
    checkpointed = json.loads(out.read_text())
    assert checkpointed["gradient_checkpointing"] is True and checkpointed["fits"] is True
    assert checkpointed["activation_bytes"] == plain["activation_bytes"]


def test_the_documented_zero_strategy_block_is_planned_with_its_stage_and_the_build_ram(tmp_path: Path) -> None:
    """Proves: `ZeroStrategy` with a shipped config name (the strategy block of cluster/README.md) is planned as
    DeepSpeed at that config's stage, and host RAM per node counts the whole model once per rank (random bases
    are drawn whole on every rank before they are partitioned)."""
    from lit_medxchat.plan.memory import BUILD_RAM

    out = tmp_path / "plan.json"
    argv = ["--config", "tiny/chat", "--trainer.devices", "2", "--trainer.precision", "bf16-mixed",
            "--trainer.strategy", "lit_medxchat.training.strategies.ZeroStrategy",
            "--trainer.strategy.init_args.config", "zero3", "--json", str(out)]
    assert main(argv) == 0
    plan = json.loads(out.read_text())
    assert plan["strategy"] == "ZeroStrategy (zero3)"
    assert "largest layer gathered (ZeRO-3)" in plan["gpu_bytes"]
    whole = sum(part["trainable_bytes"] + part["frozen_bytes"] for part in plan["parameters"]["parts"])
    assert plan["cpu_bytes_per_node"][BUILD_RAM] == 2 * whole


def test_paper_chat_under_zero3_counts_a_share_of_the_pretrained_base_in_host_ram(tmp_path: Path) -> None:
    """Proves: with the documented ZeroStrategy at ZeRO-3, the paper chat model's pretrained tower and LLM load
    straight into partitions (`configure_model` under `zero3_build`), so a rank's host RAM for the build holds 1/8
    of their frozen weights on 8 GPUs; the trainable parts are built whole. ZeRO-2 still builds all of it."""
    from lit_medxchat.plan.memory import BUILD_RAM

    def plan_for(config: str) -> dict:
        out = tmp_path / f"{config}.json"
        assert main(["--config", "paper/chat", "--trainer.devices", "8", "--trainer.precision", "bf16-mixed",
                     "--trainer.strategy", "lit_medxchat.training.strategies.ZeroStrategy",
                     "--trainer.strategy.init_args.config", config, "--json", str(out)]) == 0
        return json.loads(out.read_text())

    zero3, zero2 = plan_for("zero3"), plan_for("zero2")
    parts = {part["name"]: part for part in zero3["parameters"]["parts"]}
    assert {"llm", "vision_tower"} <= set(parts)
    per_rank = sum(part["trainable_bytes"] + (part["frozen_bytes"] // 8 if name in ("llm", "vision_tower")
                                              else part["frozen_bytes"]) for name, part in parts.items())
    assert zero3["cpu_bytes_per_node"][BUILD_RAM] == 8 * per_rank
    whole = sum(part["trainable_bytes"] + part["frozen_bytes"] for part in parts.values())
    assert zero2["cpu_bytes_per_node"][BUILD_RAM] == 8 * whole > 6 * zero3["cpu_bytes_per_node"][BUILD_RAM]
