"""The cluster run, rehearsed on CPU: every shipped model x {DDP, ZeRO-2, ZeRO-3} on 2 nodes x 2 ranks.

What a user types is what runs: `cluster/torchrun.sh` once per node (NODE_RANK 0 and 1 on 127.0.0.1, 4 gloo
processes), a shipped `tiny/*` config (the paper's model classes at tiny sizes), the strategy block of
`cluster/README.md` read from the README itself, shards from `lit-medxchat data synth/prepare` and a LLaMA-style
(SentencePiece, pad = eos) tokenizer from `lit-medxchat tokenizer --style llama`. Each case: fit with periodic
checkpoints and validation (generation and the config's metric callbacks) -> SIGKILL of both nodes after step 6,
before its checkpoint -> the same command with `--ckpt_path last` (resumes from step 4) -> steps 4 and 5 give the
same losses as before the kill, bit for bit, on every rank -> the final checkpoint, validated by one process, gives
the 4-rank validation's metrics. The chat model loads its vision tower and LLM with `from_pretrained` from folders
(the tiny config's bases, saved once), as the paper config does; under ZeRO-3 each rank must hold a quarter of the
frozen base right after `configure_model` (it loads straight into partitions).

Bitwise holds for the first resumed step (restored weights, data position and RNG). From the next step on, the
losses agree to float32 rounding, not bit for bit: with more than two ranks an all-reduce adds four values in an
order set by where a gradient sits in its communication bucket, and DDP lays its buckets out anew after the first
step of a process (by the order gradients became ready), so the resumed process sums some gradients in another
order than the uninterrupted one did. With two ranks (the other fault tests) the sum has one order and stays bitwise.

Two departures from the shipped files, each where the shipped value would hide what the rehearsal checks. ZeRO-3
runs with `stage3_param_persistence_threshold: 0`: the shipped 100,000 keeps every parameter smaller than that whole
on every rank, which is every parameter of a tiny model, so nothing would be partitioned and no all-gather would
run. And precision is `32-true` instead of the block's `bf16-mixed`: under bf16 DeepSpeed computes with bf16 copies
of the weights, which a single process validating the fp32 master weights cannot match figure for figure.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("deepspeed")

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
MODELS = ("view_classifier", "findings_classifier", "diffusion", "chat")
STRATEGIES = ("ddp", "zero2", "zero3")
MAX_STEPS, KILL_AFTER_STEP, RESUMED_FROM = 8, 6, 4
HANG_TIMEOUT_S = 420  # a rank still running after this prints every thread's stack and exits
# Metrics a single process must reproduce from the 4-rank validation of the same checkpoint (all logged keys of
# the validation are compared; these are the ones each model must have).
REQUIRED_METRICS = {
    "view_classifier": {"val/loss", "val/accuracy"},
    "findings_classifier": {"val/loss", "val/auroc"},
    "diffusion": {"val/loss"},
    "chat": {"val/loss", "val/report_n", "val/vqa_acc"},
}


@pytest.fixture(scope="module")
def cluster_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Shards of 36 phantom subjects (59 train, 9 validation samples: 7 steps of 4 ranks x 2) and a tokenizer shaped
    as the paper's LLaMA one."""
    from datamodules.tokenizer_cli import main as tokenizer_main
    from lit_medxchat.inference.prepare_cli import main as prepare_main
    from lit_medxchat.synth.cli import main as synth_main

    root = tmp_path_factory.mktemp("rehearsal-data")
    assert synth_main(["--out", str(root / "mimic"), "--num-subjects", "36", "--seed", "3", "--image-size", "64",
                       "--phantom", "--no-progress"]) == 0
    assert prepare_main(["mimic-cxr", "--root", str(root / "mimic"), "--out", str(root / "shards"), "--image-size",
                         "64", "--samples-per-shard", "8", "--workers", "1"]) == 0
    assert tokenizer_main(["--data-dir", str(root / "shards"), "--out", str(root / "tokenizer"),
                           "--vocab-size", "600", "--style", "llama"]) == 0
    return {"shards": root / "shards", "tokenizer": root / "tokenizer", **_pretrained_chat_bases(root)}


def _pretrained_chat_bases(root: Path) -> dict[str, Path]:
    """The tiny chat config's vision tower and LLM saved as transformers folders: the chat cases load them with
    `from_pretrained`, as the paper config does (under ZeRO-3, straight into partitions)."""
    from lit_medxchat.models.causal_lm import build_llm, load_tokenizer
    from lit_medxchat.models.medxchat_options import LLMOptions, VisionOptions
    from lit_medxchat.models.visual_adapter import build_vision_tower

    chat = yaml.safe_load((ROOT / "lit_medxchat" / "configs" / "tiny" / "chat.yaml").read_text())["model"]["init_args"]
    tokenizer = load_tokenizer(root / "tokenizer")
    build_llm(LLMOptions(config=chat["llm"]["config"]), tokenizer).save_pretrained(root / "llm")
    build_vision_tower(VisionOptions(config=chat["vision"]["config"])).backbone.save_pretrained(root / "vision")
    return {"llm": root / "llm", "vision": root / "vision"}


def _chat_args(data: dict[str, Path]) -> list[str]:
    return ["--model.init_args.tokenizer", str(data["tokenizer"]), "--data.init_args.tokenizer_path",
            str(data["tokenizer"]), "--model.init_args.llm.name_or_path", str(data["llm"]),
            "--model.init_args.vision.name_or_path", str(data["vision"])]


def readme_strategy_block() -> dict:
    """The YAML block of cluster/README.md that selects a DeepSpeed strategy, parsed."""
    text = (ROOT / "cluster" / "README.md").read_text()
    blocks = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]
    found = [block for block in blocks if isinstance(block, dict) and "strategy" in block.get("trainer", {})]
    assert len(found) == 1, "cluster/README.md must hold exactly one YAML block with trainer.strategy"
    return found[0]


def strategy_config(strategy: str, folder: Path) -> list[str]:
    """LightningCLI options selecting `strategy` as cluster/README.md documents it."""
    if strategy == "ddp":
        return ["--trainer.strategy", "ddp"]
    block = readme_strategy_block()
    init_args = block["trainer"]["strategy"]["init_args"]
    assert init_args["config"] == "cluster/deepspeed/zero2.json", "the README's example selects zero2.json"
    if strategy == "zero3":
        config = json.loads((ROOT / "cluster" / "deepspeed" / "zero3.json").read_text())
        config["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # see the module docstring
        init_args["config"] = str(folder / "zero3.json")
        Path(init_args["config"]).write_text(json.dumps(config))
    path = folder / f"{strategy}.yaml"
    path.write_text(yaml.safe_dump(block))
    # The block's bf16-mixed makes DeepSpeed compute with bf16 copies of the weights, which one process validating
    # the fp32 master weights cannot match; fp32 here lets the two validations be compared figure for figure.
    return ["--config", str(path), "--trainer.precision", "32-true"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("WANDB_SERVICE", None)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "lit-medxchat" / "torch_extensions"))
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(HERE),
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", WANDB_MODE="offline", WANDB_DIR=str(tmp), **extra)
    return env


def _fit_args(model: str, data: dict[str, Path], run: Path, kill_after_step: int) -> list[str]:
    args = ["--config", f"tiny/{model}", "--data.init_args.data_dir", str(data["shards"]),
            "--data.init_args.batch_size", "2", "--trainer.default_root_dir", str(run),
            "--trainer.max_steps", str(MAX_STEPS), "--trainer.limit_val_batches", "1.0",
            "--trainer.val_check_interval", "4", "--trainer.check_val_every_n_epoch", "null",
            "--trainer.num_sanity_val_steps", "0",
            "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(run),
            "--trainer.logger.name", "csv",
            "--trainer.callbacks+=cli_callbacks.RankStepLog", "--trainer.callbacks.prefix", str(run / "losses"),
            "--trainer.callbacks.kill_after_step", str(kill_after_step),
            "--trainer.callbacks.hang_timeout_s", str(HANG_TIMEOUT_S)]
    if model == "chat":
        args += _chat_args(data)
    return args


def launch_two_nodes(args: list[str], tmp: Path, log_name: str) -> tuple[list[int], str]:
    """`cluster/torchrun.sh ARGS` as node 0 and node 1 of a 2 x 2 job on this machine; (return codes, output)."""
    port = _free_port()
    nodes, logs = [], [tmp / f"{log_name}.node{rank}.log" for rank in (0, 1)]
    for node_rank, log in enumerate(logs):
        env = _env(tmp, NUM_NODES="2", NODE_RANK=str(node_rank), MAIN_ADDRESS="127.0.0.1", MAIN_PORT=str(port),
                   DEVICES="2")
        # Files, not pipes: a full pipe nobody reads blocks that node while the other waits on it. A session of its
        # own per node: the kill takes the node's launcher and ranks together, as a preemption does.
        with log.open("w") as sink:
            nodes.append(subprocess.Popen(["bash", str(ROOT / "cluster" / "torchrun.sh"), *args], env=env, cwd=ROOT,
                                          stdout=sink, stderr=subprocess.STDOUT, start_new_session=True))
    codes = [node.wait(timeout=HANG_TIMEOUT_S + 120) for node in nodes]
    return codes, "\n".join(f"--- {log.name} ---\n{log.read_text()[-6000:]}" for log in logs)


def _losses(run: Path, rank: int) -> list[dict]:
    path = run / f"losses.rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _validation_rows(run: Path) -> list[dict[str, float]]:
    """Rows of the CSV logger that hold validation metrics, in order, as floats."""
    files = sorted(run.glob("csv/*/metrics.csv"))
    rows = []
    for file in files:
        with file.open() as handle:
            for row in csv.DictReader(handle):
                values = {key: float(value) for key, value in row.items() if value not in ("", None)}
                if any(key.startswith("val/") for key in values):
                    rows.append(values)
    return rows


def _final_checkpoint(run: Path) -> Path:
    from lit_medxchat.training.completion import find_last_complete_checkpoint, read_marker

    checkpoint = find_last_complete_checkpoint(run / "checkpoints")
    assert read_marker(checkpoint)["global_step"] == MAX_STEPS
    return checkpoint


def _single_process_validation(model: str, data: dict[str, Path], checkpoint: Path, tmp: Path) -> dict[str, float]:
    """`lit-medxchat validate` of `checkpoint` in one process (a ZeRO directory converted to one fp32 file first)."""
    if checkpoint.is_dir():
        converted = tmp / "fp32.ckpt"
        done = subprocess.run([sys.executable, "-m", "lit_medxchat.training.checkpointing", "to-fp32", str(checkpoint),
                               str(converted)], env=_env(tmp), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        checkpoint = converted
    run = tmp / "single"
    args = [sys.executable, "-m", "lit_medxchat.cli", "validate", "--config", f"tiny/{model}",
            "--data.init_args.data_dir", str(data["shards"]), "--data.init_args.batch_size", "2",
            "--trainer.default_root_dir", str(run), "--trainer.limit_val_batches", "1.0",
            "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(run),
            "--trainer.logger.name", "csv", "--ckpt_path", str(checkpoint)]
    if model == "chat":
        args += _chat_args(data)
    done = subprocess.run(args, env=_env(tmp), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _validation_rows(run)
    assert len(rows) == 1, rows
    return rows[0]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("model", MODELS)
def test_cluster_rehearsal(model: str, strategy: str, cluster_data, tmp_path: Path) -> None:
    """Proves, per model and strategy: the documented 2-node launch trains the real model, validates with its
    callbacks, survives a SIGKILL of both nodes with an exact continuation from the newest complete checkpoint, and
    its distributed validation metrics equal one process's on the same checkpoint."""
    started = time.monotonic()
    run = tmp_path / "run"
    args = _fit_args(model, cluster_data, run, KILL_AFTER_STEP) + strategy_config(strategy, tmp_path)
    codes, output = launch_two_nodes(args, tmp_path, "killed")
    assert codes == [-signal.SIGKILL, -signal.SIGKILL] or all(code != 0 for code in codes), output
    before = {rank: _losses(run, rank) for rank in range(4)}
    assert all([row["step"] for row in rows] == list(range(KILL_AFTER_STEP)) for rows in before.values()), before

    resume_args = [*_fit_args(model, cluster_data, run, -1), *strategy_config(strategy, tmp_path)]
    resume_args += ["--ckpt_path", "last"]
    codes, output = launch_two_nodes(resume_args, tmp_path, "resumed")
    assert codes == [0, 0], output
    for rank in range(4):
        rows = _losses(run, rank)[KILL_AFTER_STEP:]
        assert [row["step"] for row in rows] == list(range(RESUMED_FROM, MAX_STEPS)), (rank, rows)
        replayed = {row["step"]: row["loss"] for row in rows}
        first, *later = before[rank][RESUMED_FROM:]
        assert replayed[first["step"]] == first["loss"], (rank, first, replayed)  # restored weights and data: bitwise
        for row in later:  # one all-reduced update later: the same up to the order of a 4-term float sum
            assert replayed[row["step"]] == pytest.approx(row["loss"], rel=1e-6), (rank, row, replayed)
        assert all(math.isfinite(row["loss"]) for row in rows)

    if model == "chat" and strategy == "zero3":  # built in `configure_model`, the frozen base loaded partitioned
        for rank in range(4):
            held = json.loads((run / f"losses.rank{rank}.built.json").read_text())
            assert 0 < held["frozen_local"] <= 0.26 * held["frozen_whole"], (rank, held)

    distributed = _validation_rows(run)[-1]
    single = _single_process_validation(model, cluster_data, _final_checkpoint(run), tmp_path)
    compared = {key for key in distributed if key.startswith("val/")}
    assert REQUIRED_METRICS[model] <= compared, compared
    for key in sorted(compared):
        assert single[key] == pytest.approx(distributed[key], rel=1e-4, abs=1e-6), (key, single, distributed)
    print(f"{model} {strategy}: {time.monotonic() - started:.0f} s")
