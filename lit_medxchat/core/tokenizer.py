"""Chat tokenizers trained locally on the shards' text, for the tiny and demo LLMs.

Paper-scale runs use the base LLM's own tokenizer (`AutoTokenizer.from_pretrained`) extended by
`add_medxchat_tokens`; tiny runs train one here so that nothing is downloaded. Either way the run
saves it with `save_pretrained` into `RUN/tokenizer/`, and `AutoTokenizer.from_pretrained` loads it.

Two styles: `byte-bpe` (GPT-2-like byte-level BPE with its own pad token, the demo's) and `llama`
(SentencePiece-style BPE as LLaMA's: "▁" word marks, byte fallback, `<unk>`/`<s>`/`</s>`, no pad token so
pad = eos), loaded as transformers' `LlamaTokenizer` exactly as the paper config's LLaMA tokenizer is: the
paper path's encoding quirks (a "▁" prepended to every text it is given) are exercised on CPU.

Token roles:
- `<image>` is a *special* token: the model replaces its embeddings by visual-adapter outputs, and
  `decode(..., skip_special_tokens=True)` drops it.
- `<Xray>` / `</Xray>` are *added, non-special* tokens: atomic (never split by BPE) but kept by
  `decode(..., skip_special_tokens=True)`, because the chat pipeline parses them out of answers.
- `<pad>`, `<s>`, `</s>`, `<unk>` are the pad / bos / eos / unk tokens; padding is on the **left**
  so that batched generation continues every prompt from its last real token.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from lit_medxchat.core.constants import IMAGE_TOKEN, XRAY_END, XRAY_START

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
# Order fixes the ids 0..3 of a trained tokenizer; the three MedXChat tokens follow.
BASE_SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)
MIN_VOCAB_SIZE = 256 + len(BASE_SPECIAL_TOKENS) + 3  # the byte alphabet must fit
STYLES = ("byte-bpe", "llama")
LLAMA_SPECIAL_TOKENS: tuple[str, ...] = (UNK_TOKEN, BOS_TOKEN, EOS_TOKEN)  # ids 0, 1, 2 as in LLaMA
LLAMA_BYTE_TOKENS: tuple[str, ...] = tuple(f"<0x{value:02X}>" for value in range(256))  # byte fallback


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: str | Path | None = None,
    model_max_length: int = 2048,
    style: str = "byte-bpe",
) -> PreTrainedTokenizerFast:
    """Train a BPE tokenizer of `style` (`STYLES`) on `texts` and (when `out_dir` is given) save it there.

    Args:
        texts: training text (reports, dialogue turns); iterated once. Any Unicode is encodable
            afterwards because the alphabet is the 256 bytes.
        vocab_size: total vocabulary including the 256 byte symbols and the 7 special/added
            tokens; at least `MIN_VOCAB_SIZE`. Fewer merges are learned if the text runs out.
        out_dir: folder for `save_pretrained` (created); `AutoTokenizer.from_pretrained(out_dir)`
            reloads the same tokenizer.
        model_max_length: recorded in the tokenizer config (tokens).
        style: `byte-bpe` or `llama` (see the module docstring).
    """
    if style not in STYLES:
        raise ValueError(f"style={style!r} is not a tokenizer style; choose one of {STYLES}")
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least {MIN_VOCAB_SIZE} "
            "(256 bytes + special tokens); raise vocab_size."
        )
    if style == "llama":
        tokenizer = _train_llama(texts, vocab_size, model_max_length)
        return _finish(tokenizer, out_dir)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 3,  # the three MedXChat tokens are added after training
        special_tokens=list(BASE_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    counter = _CountingIterator(texts)
    backend.train_from_iterator(counter, trainer=trainer)
    if counter.count == 0:
        raise ValueError("train_tokenizer got no texts: pass the shards' reports and dialogue turns.")

    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="left",
        model_max_length=model_max_length,
    )
    return _finish(tokenizer, out_dir)


def _finish(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path | None) -> PreTrainedTokenizerFast:
    add_medxchat_tokens(tokenizer)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(out))
    return tokenizer


def _train_llama(texts: Iterable[str], vocab_size: int, model_max_length: int) -> PreTrainedTokenizerFast:
    """SentencePiece-style BPE: merges learnt inside "▁"-marked words (as SentencePiece splits on whitespace),
    the 256 byte pieces for anything unseen, then handed to transformers' `LlamaTokenizer` (its pre-tokenizer,
    decoder and special tokens)."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN, byte_fallback=True, fuse_unk=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 3,  # the three MedXChat tokens are added after training
        special_tokens=[*LLAMA_SPECIAL_TOKENS, *LLAMA_BYTE_TOKENS],
        show_progress=False,
    )
    counter = _CountingIterator(texts)
    backend.train_from_iterator(counter, trainer=trainer)
    if counter.count == 0:
        raise ValueError("train_tokenizer got no texts: pass the shards' reports and dialogue turns.")
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in model["merges"]]
    return LlamaTokenizer(vocab=model["vocab"], merges=merges, model_max_length=model_max_length)


def add_medxchat_tokens(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Add `<image>` (special) and `<Xray>`, `</Xray>` (atomic, kept on decode) to any tokenizer.

    Also gives it a pad token (eos when it has none) and left padding. Returns the ids of the three
    tokens in `SPECIAL_TOKENS` order; the LLM's embedding rows at these ids must be trainable.
    Idempotent: a tokenizer that already holds them is left as is.
    """
    from tokenizers import AddedToken

    tokenizer.add_special_tokens(
        {"extra_special_tokens": [AddedToken(IMAGE_TOKEN, special=True, normalized=False)]},
        replace_extra_special_tokens=False,
    )
    tokenizer.add_tokens(
        [
            AddedToken(XRAY_START, special=False, normalized=False, single_word=False),
            AddedToken(XRAY_END, special=False, normalized=False, single_word=False),
        ]
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return medxchat_token_ids(tokenizer)


def medxchat_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of `<image>`, `<Xray>`, `</Xray>`; raises naming the missing token and the fix."""
    ids = []
    for token in (IMAGE_TOKEN, XRAY_START, XRAY_END):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id or tokenizer.convert_ids_to_tokens(token_id) != token:
            raise ValueError(
                f"tokenizer has no {token!r} token: build it with lit_medxchat.core.tokenizer.train_tokenizer "
                "or call add_medxchat_tokens(tokenizer) before training."
            )
        ids.append(int(token_id))
    return ids


class _CountingIterator:
    """Iterates `texts` once, counting items so an empty corpus is reported instead of ignored."""

    def __init__(self, texts: Iterable[str]) -> None:
        self._texts = iter(texts)
        self.count = 0

    def __iter__(self) -> _CountingIterator:
        return self

    def __next__(self) -> str:
        text = next(self._texts)
        self.count += 1
        return text
