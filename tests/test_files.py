"""Bulk jobs: `texts_file` in four formats, vectors streamed to .npy or .jsonl, errors that name the line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from e5 import InputError

TEXTS = [f"document {i}: the protein female eat 南瓜 的 家常 做法" + " der" * (i % 7) for i in range(10)]


def write(path, texts):
    suffix = path.suffix
    if suffix == ".txt":
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(texts), encoding="utf-8")
    elif suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "text"])
            w.writerows([i, t] for i, t in enumerate(texts))
    return path


@pytest.fixture(scope="module")
def direct(predictor, loop):
    from conftest import DEFAULTS

    out = loop.run_until_complete(predictor.predict(**{**DEFAULTS, "texts": TEXTS, "input_type": "document"}))
    return np.array(out.embeddings, dtype=np.float32), out.token_counts


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".json", ".csv"])
def test_each_input_format_gives_the_same_vectors_as_texts(embed, direct, tmp_path, suffix):
    out = embed(texts_file=write(tmp_path / f"in{suffix}", TEXTS), input_type="document")
    assert len(out.embeddings) == 0 and out.embeddings_file.suffix == ".npy"
    vectors = np.load(out.embeddings_file)
    assert vectors.dtype == np.float32 and vectors.shape == (10, 1024)
    assert np.abs(vectors - direct[0]).max() < 1e-5
    assert out.token_counts == direct[1] and out.usage["prompt_tokens"] == sum(direct[1])


def test_jsonl_output_carries_index_and_vector(embed, direct, tmp_path):
    out = embed(texts_file=write(tmp_path / "in.txt", TEXTS), input_type="document", output_file_format="jsonl")
    rows = [json.loads(line) for line in out.embeddings_file.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(10))
    assert np.abs(np.array([r["embedding"] for r in rows]) - direct[0]).max() < 1e-5


def test_queries_in_a_file_carry_the_instruction(embed, tmp_path):
    from_file = np.load(embed(texts_file=write(tmp_path / "q.txt", TEXTS[:3]), task="nq").embeddings_file)
    from_list = np.array(embed(texts=TEXTS[:3], task="nq").embeddings)
    assert np.abs(from_file - from_list).max() < 1e-5


def test_many_texts_stream_in_chunks(embed, tmp_path, monkeypatch):

    monkeypatch.setattr("e5.service.FILE_CHUNK_TEXTS", 256)  # several chunks on a small file
    texts = [f"query {i} protein" for i in range(1000)]
    out = embed(texts_file=write(tmp_path / "many.txt", texts), input_type="document")
    vectors = np.load(out.embeddings_file, mmap_mode="r")
    assert vectors.shape == (1000, 1024)
    assert np.allclose(np.linalg.norm(vectors[::97], axis=1), 1.0, atol=1e-5)
    alone = np.array(embed(texts=[texts[777]], input_type="document").embeddings[0])
    assert np.abs(vectors[777] - alone).max() < 1e-5


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("blank.txt", "one\n\nthree\n", "`texts_file` line 2 is empty or whitespace-only"),
        ("bad.jsonl", '{"text": "a"}\n{"txt": "b"}\n', "`texts_file` line 2 needs an object with a `text` field"),
        ("broken.jsonl", '{"text": "a"}\n{oops\n', "`texts_file` line 2 is not valid JSON"),
        ("num.jsonl", '{"text": 5}\n', "`texts_file` line 1 must be a string, got int"),
        ("surrogate.jsonl", '{"text": "a\\ud800"}\n', "`texts_file` line 1 is not valid Unicode: lone surrogate U+D800"),
        ("obj.json", '{"text": "a"}', "`texts_file` (.json) must hold a list of strings"),
        ("nocol.csv", "id,body\n1,a\n", "`texts_file` (.csv) needs a `text` column"),
        ("data.parquet", "x", "`texts_file` must end in .txt, .jsonl, .json, .csv; got '.parquet'"),
        ("empty.txt", "", "`texts_file` holds no texts"),
    ],
)
def test_bad_files_name_the_line(embed, tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as err:
        embed(texts_file=path)
    assert fragment in str(err.value)


def test_non_utf8_file_is_refused(embed, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="`texts_file` is not UTF-8 text"):
        embed(texts_file=path)


def test_file_and_texts_together_are_refused(embed, tmp_path):
    path = write(tmp_path / "in.txt", TEXTS)
    with pytest.raises(InputError, match="give `texts` or `texts_file`, not both"):
        embed(texts=["a"], texts_file=path)
    with pytest.raises(InputError, match="`texts_file` results are float32 files"):
        embed(texts_file=path, encoding_format="int8")


def test_a_long_text_in_a_file_names_its_index_when_truncate_is_off(embed, tmp_path, monkeypatch):

    monkeypatch.setattr("e5.service.FILE_CHUNK_TEXTS", 4)
    texts = TEXTS[:6] + ["the protein female eat " * 300]
    with pytest.raises(InputError, match=r"`texts_file\[6\]` has \d+ tokens; the limit is 512"):
        embed(texts_file=write(tmp_path / "long.txt", texts), input_type="document", truncate=False)
