"""Build a tiny, random, deterministic BERT cross-encoder for the Infinity CI server.

Run with the Python of the Infinity virtual environment (so the saved files match
the transformers version Infinity loads them with):

    $INFINITY_VENV/bin/python scripts/infinity/build_tiny_model.py OUT_DIR

The model has random weights (torch.manual_seed(0)): its scores are meaningless but
stable, which is all a wire-format / integration test needs. No network access.
"""

from __future__ import annotations

import os
import sys
import tempfile

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an of to in on for with and or is are was be by at as it this that from "
    "what which who how why when where do does can rerank router query document "
    "search result score model server cpu fast slow cheap good bad best paris france "
    "capital city river water fire earth cat dog bird fish tree house car road hello "
    "world doc test data text one two three four five six seven eight nine ten"
).split()
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-_/")


def build(out_dir: str) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    os.makedirs(out_dir, exist_ok=True)

    vocab = list(SPECIAL)
    for tok in WORDS + CHARS + ["##" + c for c in CHARS]:
        if tok not in vocab:
            vocab.append(tok)

    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = os.path.join(tmp, "vocab.txt")
        with open(vocab_file, "w", encoding="utf-8") as f:
            f.write("\n".join(vocab) + "\n")
        tokenizer = BertTokenizerFast(vocab_file=vocab_file, do_lower_case=True, model_max_length=512)

    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    model = BertForSequenceClassification(cfg)
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUT_DIR", file=sys.stderr)
        return 2
    build(argv[1])
    print(f"tiny cross-encoder written to {argv[1]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
