"""`lit-medxchat tokenizer --data-dir SHARDS --out DIR`: train the chat tokenizer on the training shards' text.

`SHARDS` is a folder or any location a DataModule's `data_dir` accepts (URLs are streamed once, front to back).

Tiny and demo LLMs have no pretrained vocabulary, so their tokenizer is trained locally on exactly
the text they will model: the view-augmented reports and every dialogue turn of the train split.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path


def corpus_from_shards(data_dir: str | Path, split: str = "train") -> Iterator[str]:
    """Every report (`.txt`) and dialogue turn (`.conv.json`) of a split, in shard order."""
    from datamodules.streaming import iter_samples

    for sample in iter_samples(data_dir, split):
        yield sample.text("txt")
        for dialogue in sample.json("conv.json").get("dialogues", []):
            for turn in dialogue["turns"]:
                yield turn["content"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lit-medxchat tokenizer", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True,
                        help="shards written by `data prepare`: a folder, or a URL location (http(s)://, s3://, gs://, "
                             "'pipe:CMD {shard}')")
    parser.add_argument("--out", type=Path, required=True, help="folder for the tokenizer (save_pretrained format)")
    parser.add_argument("--vocab-size", type=int, default=2000, help="BPE vocabulary size (default 2000)")
    parser.add_argument("--style", choices=("byte-bpe", "llama"), default="byte-bpe",
                        help="byte-bpe (GPT-2-like, its own pad token; default) or llama (SentencePiece-style as "
                             "LLaMA's tokenizer: '▁' word marks, byte fallback, pad = eos)")
    parser.add_argument("--split", default="train", help="split whose text trains the tokenizer (default train)")
    args = parser.parse_args(argv)
    if args.vocab_size < 300:
        print(
            f"lit-medxchat tokenizer: error: --vocab-size must be at least 300, got {args.vocab_size}", file=sys.stderr
        )
        return 2
    from lit_medxchat.core.tokenizer import train_tokenizer

    texts = list(corpus_from_shards(args.data_dir, args.split))
    if not texts:
        print(f"lit-medxchat tokenizer: error: no text in {args.data_dir}/{args.split}", file=sys.stderr)
        return 2
    tokenizer = train_tokenizer(texts, args.vocab_size, args.out, style=args.style)
    print(f"trained a {len(tokenizer)}-token {args.style} tokenizer on {len(texts)} texts -> {args.out}")
    return 0
