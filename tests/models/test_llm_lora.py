"""MedXChatLoRA at tiny scale: what trains, what stays frozen, that images reach the loss,
that generation is padding-invariant and that checkpoints hold only trainable weights."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lit_medxchat.core.constants import XRAY_END, XRAY_START
from lit_medxchat.core.conversation import IGNORE_INDEX, SYSTEM_PROMPT, encode_conversation, encode_prompt
from lit_medxchat.core.tokenizer import train_tokenizer
from lit_medxchat.models.checkpoint_io import CheckpointMismatchError
from lit_medxchat.models.llm_lora import MedXChatLoRA
from lit_medxchat.models.medxchat_options import LoRAOptions, tiny_options

NUM_IMAGE_TOKENS = 4
TEXTS = [
    "PA view of the chest was obtained. findings: small left pleural effusion. impression: effusion.",
    "Lateral view of the chest was obtained. findings: no pneumothorax. impression: no acute process.",
    f"Here is the image: {XRAY_START} PA view of the chest was obtained. {XRAY_END}",
    "Human: What does the X-ray show? AI: Is there an effusion? yes no",
    SYSTEM_PROMPT,
] * 10
DIALOGUES = [
    (1, [{"role": "user", "content": "What does the X-ray show?"},
         {"role": "assistant", "content": "findings: small left pleural effusion."}]),
    (2, [{"role": "user", "content": "Is there a pneumothorax?"}, {"role": "assistant", "content": "no"}]),
    (0, [{"role": "user", "content": "Draw a PA chest X-ray with an effusion."},
         {"role": "assistant", "content": f"{XRAY_START} PA view of the chest was obtained. effusion. {XRAY_END}"}]),
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(TEXTS, vocab_size=1000, out_dir=out)
    return out


def make_model(tokenizer_dir, **changes) -> MedXChatLoRA:
    options = tiny_options(NUM_IMAGE_TOKENS)
    options.update(changes)
    return MedXChatLoRA(str(tokenizer_dir), **options)


def chat_batch(tokenizer, dialogues=DIALOGUES, seed: int = 0) -> dict:
    """A right-padded chat batch (docs/data-contracts.md §3) with prompts for generation."""
    generator = torch.Generator().manual_seed(seed)
    encoded = [encode_conversation(tokenizer, turns, num_images=n, num_image_tokens=NUM_IMAGE_TOKENS, max_length=256)
               for n, turns in dialogues]
    prompts = [encode_prompt(tokenizer, turns[:-1], num_images=n, num_image_tokens=NUM_IMAGE_TOKENS, max_length=256)
               for n, turns in dialogues]
    length, plen, pad = max(len(e.input_ids) for e in encoded), max(map(len, prompts)), tokenizer.pad_token_id
    max_images = max(n for n, _ in dialogues)
    return {
        "input_ids": torch.tensor([e.input_ids + [pad] * (length - len(e.input_ids)) for e in encoded]),
        "attention_mask": torch.tensor([[1] * len(e.input_ids) + [0] * (length - len(e.input_ids)) for e in encoded]),
        "labels": torch.tensor([e.labels + [IGNORE_INDEX] * (length - len(e.labels)) for e in encoded]),
        "pixel_values": torch.randn(len(dialogues), max_images, 3, 64, 64, generator=generator),
        "image_mask": torch.tensor([[i < n for i in range(max_images)] for n, _ in dialogues]),
        "prompt_input_ids": torch.tensor([[pad] * (plen - len(p)) + p for p in prompts]),
        "prompt_attention_mask": torch.tensor([[0] * (plen - len(p)) + [1] * len(p) for p in prompts]),
        "references": [turns[-1]["content"] for _, turns in dialogues],
        "tasks": ["report", "vqa", "t2i"][: len(dialogues)],
        "meta": [{"key": f"k{i}"} for i in range(len(dialogues))],
    }


def test_trainable_parameters_are_lora_adapter_and_special_token_rows(tokenizer_dir):
    model = make_model(tokenizer_dir)
    hidden, layers, r = 64, 2, 4
    kv_width = 64 // 4 * 2  # head_dim * num_key_value_heads
    lora = layers * (r * (hidden + hidden) + r * (hidden + kv_width))  # q_proj and v_proj
    token_rows = 2 * 3 * hidden  # <image>, <Xray>, </Xray> in the input embedding and the untied LM head
    adapter = sum(p.numel() for p in model.adapter.parameters())
    assert model.trainable_parameter_count() == lora + token_rows + adapter
    assert not any(p.requires_grad for p in model.vision_tower.parameters())
    trainable_llm = {n for n, p in model.llm.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "trainable_tokens_delta" in n for n in trainable_llm)


class _Recorder(pl.Callback):
    """Records losses and checks, at every step of `fit`, that frozen parts stay frozen."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        assert not module.vision_tower.training
        suffixes = ("q_proj.base_layer", "embed_tokens.base_layer", "mlp", "input_layernorm")
        frozen = [m for n, m in module.llm.named_modules() if n.endswith(suffixes)]
        assert frozen and not any(m.training for m in frozen)
        assert module.adapter.training

    def on_after_backward(self, trainer, module):
        for name, param in module.named_parameters():
            if not param.requires_grad:
                assert param.grad is None, name
        assert all(p.grad is not None for p in module.adapter.parameters())

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def test_fit_learns_a_fixed_batch_and_checkpoints_only_trainable_weights(tokenizer_dir, tmp_path):
    torch.manual_seed(0)
    model = make_model(tokenizer_dir)
    batch = chat_batch(model.tokenizer)
    train_keys = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels", "pixel_values",
                                                           "image_mask")}
    loader = torch.utils.data.DataLoader([train_keys] * 30, batch_size=None)
    recorder = _Recorder()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                         default_root_dir=tmp_path, callbacks=[recorder], enable_model_summary=False)
    trainer.fit(model, loader)
    assert len(recorder.losses) == 30
    assert recorder.losses[-1] < 0.5 * recorder.losses[0], recorder.losses
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()

    ckpt_path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt_path)
    checkpoint = torch.load(ckpt_path, weights_only=False)
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(checkpoint["state_dict"]) == expected
    assert "optimizer_states" in checkpoint

    reloaded = MedXChatLoRA.load_from_checkpoint(ckpt_path)
    reloaded_state = reloaded.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded_state[key]), key
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), reloaded.eval()(batch))

    other = make_model(tokenizer_dir, lora=LoRAOptions(r=4, alpha=8, dropout=0.0, target_modules=["q_proj"]))
    with pytest.raises(CheckpointMismatchError, match="unexpected keys.*v_proj"):
        other.load_state_dict(checkpoint["state_dict"])


def test_the_image_reaches_the_adapter_and_the_loss(tokenizer_dir):
    model = make_model(tokenizer_dir).eval()
    batch = chat_batch(model.tokenizer, DIALOGUES[:1], seed=1)
    other = dict(batch, pixel_values=chat_batch(model.tokenizer, DIALOGUES[:1], seed=2)["pixel_values"])
    with torch.no_grad():
        a = model.encode_images(batch["pixel_values"][:, 0])
        b = model.encode_images(other["pixel_values"][:, 0])
        assert a.shape == (1, NUM_IMAGE_TOKENS, 64)
        assert not torch.allclose(a, b)
        assert model(batch).item() != model(other).item()
    # Gradient flows back to the adapter through the LLM.
    model.train()
    model(batch).backward()
    assert model.adapter.queries.grad is not None and model.adapter.queries.grad.abs().sum() > 0


def test_image_token_count_mismatch_names_the_samples(tokenizer_dir):
    model = make_model(tokenizer_dir)
    batch = chat_batch(model.tokenizer)
    batch["image_mask"] = torch.ones_like(batch["image_mask"])
    with pytest.raises(ValueError, match=r"batch samples \[0, 2\].*num_image_tokens"):
        model(batch)


def test_left_padded_batch_generates_what_each_sample_generates_alone(tokenizer_dir):
    model = make_model(tokenizer_dir).eval()
    batch = chat_batch(model.tokenizer)
    together = model.generate(batch["prompt_input_ids"], batch["prompt_attention_mask"], batch["pixel_values"],
                              batch["image_mask"])
    assert len(together) == 3
    for i in range(3):
        alone = chat_batch(model.tokenizer, DIALOGUES[i : i + 1])
        alone["pixel_values"][:, : batch["pixel_values"].shape[1]] = batch["pixel_values"][i, : alone["pixel_values"]
                                                                                               .shape[1]]
        single = model.generate(alone["prompt_input_ids"], alone["prompt_attention_mask"], alone["pixel_values"],
                                alone["image_mask"])
        assert single == [together[i]]
    assert any(together), "the tiny model stopped at once: the comparison would prove nothing"


def test_validation_step_returns_the_metric_contract(tokenizer_dir):
    model = make_model(tokenizer_dir).eval()
    batch = chat_batch(model.tokenizer)
    out = model.validation_step(batch, 0)
    assert set(out) == {"predictions", "references", "tasks", "meta"}
    assert len(out["predictions"]) == 3 and out["references"] == batch["references"]
    assert out["tasks"] == ["report", "vqa", "t2i"] and out["meta"][1] == {"key": "k1"}


def test_bfloat16_frozen_base_keeps_trainable_weights_in_float32(tokenizer_dir):
    options = tiny_options(NUM_IMAGE_TOKENS)
    options["llm"].frozen_dtype = "bfloat16"
    model = MedXChatLoRA(str(tokenizer_dir), **options)
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in model.llm.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert next(model.vision_tower.parameters()).dtype == torch.bfloat16
    loss = model(chat_batch(model.tokenizer))
    loss.backward()
    assert torch.isfinite(loss) and model.adapter.queries.grad is not None
    token_rows = [p for n, p in model.named_parameters() if "trainable_tokens_delta" in n]
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in token_rows)


def test_resume_from_a_trainable_only_checkpoint_continues_exactly(tokenizer_dir, tmp_path):
    def fit(max_steps: int, ckpt_path=None) -> tuple[MedXChatLoRA, pl.Trainer]:
        torch.manual_seed(0)
        model = make_model(tokenizer_dir)
        batch = chat_batch(model.tokenizer)
        loader = torch.utils.data.DataLoader([batch] * 6, batch_size=None)
        trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                             enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path,
                             num_sanity_val_steps=0, limit_val_batches=0)
        trainer.fit(model, loader, ckpt_path=ckpt_path)
        return model, trainer

    straight, _ = fit(4)
    _, first = fit(2)
    first.save_checkpoint(tmp_path / "step2.ckpt")
    resumed, second = fit(4, ckpt_path=tmp_path / "step2.ckpt")
    assert second.global_step == 4
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_a_deferred_module_builds_in_configure_model_the_model_it_would_have_built_at_once(tokenizer_dir):
    """Proves: constructed under `deferred_builds` (as `lit-medxchat fit` constructs it), the module holds no model
    until the Trainer's `configure_model` (or a first use of `.model`) builds it, and what it builds equals the
    eagerly built module: same hyper-parameters, same frozen and trainable weights; a second call changes nothing."""
    from lit_medxchat.models.zero3_build import deferred_builds

    eager = MedXChatLoRA(str(tokenizer_dir), **tiny_options(NUM_IMAGE_TOKENS))
    with deferred_builds():
        deferred = MedXChatLoRA(str(tokenizer_dir), **tiny_options(NUM_IMAGE_TOKENS))
        used = MedXChatLoRA(str(tokenizer_dir), **tiny_options(NUM_IMAGE_TOKENS))
    assert "model" not in deferred._modules and dict(deferred.hparams) == dict(eager.hparams)
    deferred.configure_model()
    built = deferred.model
    deferred.configure_model()
    assert deferred.model is built
    eager_state = eager.state_dict(keep_vars=False)
    assert set(deferred.state_dict()) == set(eager_state)
    for key, value in deferred.state_dict().items():
        assert torch.equal(value, eager_state[key]), key
    assert used.tokenizer is used.model.tokenizer  # first use builds it


def test_parts_loaded_partitioned_are_the_pretrained_ones():
    """Proves: the planner's host-RAM count under ZeRO-3 partitions exactly the parts that load from folders."""
    assert MedXChatLoRA.parts_loaded_partitioned({"llm": {"name_or_path": "x"}, "vision": {"config": {}}}) == {"llm"}
    assert MedXChatLoRA.parts_loaded_partitioned({"vision": {"name_or_path": "v"}, "llm": {"name_or_path": "l"}}) \
        == {"vision_tower", "llm"}
    assert MedXChatLoRA.parts_loaded_partitioned({}) == set()


def test_per_task_losses_recombine_into_the_batch_loss_and_are_logged(tokenizer_dir):
    """The per-task figures a user reads on the progress bar are the optimised loss split by task: their
    token-weighted mean is the batch loss, and each equals the loss of that task's rows alone."""
    from lit_medxchat.models.task_losses import token_loss_by_task

    model = make_model(tokenizer_dir).eval()
    batch = chat_batch(model.tokenizer)
    with torch.no_grad():
        outputs = model._outputs(batch)
        by_task = token_loss_by_task(outputs.logits, batch["labels"], batch["tasks"])
        assert set(by_task) == {"report", "vqa", "t2i"}
        total = sum(float(s) for s, _ in by_task.values())
        count = sum(int(c) for _, c in by_task.values())
        assert count == int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        assert total / count == pytest.approx(float(outputs.loss), rel=1e-5)
        alone = {k: v[1:2] if torch.is_tensor(v) and len(v) == 3 else v for k, v in batch.items()}
        alone_loss = model._outputs({**alone, "image_mask": batch["image_mask"][1:2]}).loss
        vqa_sum, vqa_count = by_task["vqa"]
        assert float(vqa_sum / vqa_count) == pytest.approx(float(alone_loss), rel=1e-4)

    train_keys = {k: batch[k] for k in ("input_ids", "attention_mask", "labels", "pixel_values", "image_mask",
                                        "tasks")}
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(tokenizer_dir))
    trainer.fit(model.train(), torch.utils.data.DataLoader([train_keys] * 2, batch_size=None))
    assert {"train/loss_report", "train/loss_vqa", "train/loss_t2i"} <= set(trainer.progress_bar_metrics)

    # Validation logs every task on every batch (ranks must log the same metrics): one absent everywhere is NaN.
    two_tasks = {**train_keys, **{k: v[:2] for k, v in train_keys.items()}}
    trainer.validate(model, torch.utils.data.DataLoader([two_tasks], batch_size=None), verbose=False)
    logged = trainer.callback_metrics
    with torch.no_grad():
        now = token_loss_by_task(model.eval()._outputs(two_tasks).logits, two_tasks["labels"], two_tasks["tasks"])
    assert float(logged["val/loss_vqa"]) == pytest.approx(float(now["vqa"][0] / now["vqa"][1]), rel=1e-4)
    assert torch.isnan(logged["val/loss_t2i"])
