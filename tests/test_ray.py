"""Bulk embedding on Ray Data: the batch function is predict()'s request path, and the job around it keeps
every row's vector, id and place, in every input format, with two actors, on a local 2-CPU Ray cluster."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from scripts import ray_embed
from conftest import ROOT
from e5 import InputError
from e5.batch_job import FILE_COLUMN, ROW_COLUMN, EmbedBatch, embed_table, runs
from e5.validation import Limits, Options, validate_options
from testkit.synthetic_checkpoint import SEED_WORDS, write_checkpoint


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(SEED_WORDS) for _ in range(rng.randint(2, 12))) for _ in range(n)]


# A numeric-looking text (CSV must keep it a string), a comma and quotes (CSV quoting), and one text far past
# 512 tokens (truncation).
TEXTS = corpus(21) + ["2024", 'a "quoted", comma text', " ".join(corpus(80, seed=1))]
CASES = [
    dict(input_type="query", task="web_search"),
    dict(input_type="query", task="sts"),
    dict(input_type="document"),
    dict(input_type="query", task="Given a recipe name, retrieve its steps", normalize=False),
]


def options(case: dict) -> Options:
    return validate_options(Options(**case), Limits())


def vectors_of(table: pa.Table) -> np.ndarray:
    return table.column("embedding").combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)


def as_table(texts, file="in/a.txt", first_row=0) -> pa.Table:
    return pa.table({"text": texts, FILE_COLUMN: [file] * len(texts),
                     ROW_COLUMN: list(range(first_row, first_row + len(texts)))})


def predict_error(embed, **kwargs) -> str:
    with pytest.raises(InputError) as err:
        embed(**kwargs)
    return str(err.value)


# --- the batch function, without Ray ---------------------------------------------------------------------


def test_runs_split_a_batch_into_stretches_of_consecutive_rows_of_one_file():
    files = ["a", "a", "a", "b", "b", "a", "a"]
    rows = [7, 8, 10, 0, 1, 11, 12]
    assert runs(files, rows) == [("a", 7, 0, 2), ("a", 10, 2, 3), ("b", 0, 3, 5), ("a", 11, 5, 7)]
    assert runs([], []) == []


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values())[:40])
def test_the_batch_function_gives_predicts_vectors_counts_and_flags(embed, predictor, case):
    expected = embed(texts=TEXTS, **case)
    out = embed_table(predictor.embedder, as_table(TEXTS), options(case))
    # the same plan of forwards; predict() runs them on the batcher's thread, within float rounding of this
    assert np.abs(vectors_of(out) - np.asarray(expected.embeddings, dtype=np.float32)).max() < 1e-5
    assert out.column("token_count").to_pylist() == expected.token_counts
    assert out.column("truncated").to_pylist() == expected.truncated
    assert expected.truncated[-1] and not any(expected.truncated[:-1])  # the long text was cut, the rest not
    assert out.column("text").to_pylist() == TEXTS  # the batch's own columns stay


def test_long_texts_mean_gives_each_row_the_whole_texts_vector_across_files_of_a_batch(embed, predictor):
    """A batch of two files' rows, the long text in the second: each row the vector predict() gives it."""
    case = dict(input_type="document", long_texts="mean")
    expected = embed(texts=TEXTS, **case)
    batch = pa.concat_tables([as_table(TEXTS[:20], "part-0.txt", first_row=100), as_table(TEXTS[20:], "part-1.txt")])
    out = embed_table(predictor.embedder, batch, options(case))
    assert np.abs(vectors_of(out) - np.asarray(expected.embeddings, dtype=np.float32)).max() < 1e-5
    assert out.column("token_count").to_pylist() == expected.token_counts and expected.token_counts[-1] > 512
    assert not any(out.column("truncated").to_pylist())
    with pytest.raises(ValueError, match="use mean"):
        EmbedBatch("unused", Options(long_texts="windows"))


def test_an_empty_batch_gives_an_empty_table_with_the_output_columns(predictor):
    out = embed_table(predictor.embedder, as_table([]), options(CASES[0]))
    assert out.num_rows == 0
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), 1024)


@pytest.mark.parametrize("bad, index", [("   ", 3), (None, 5)])
def test_a_bad_text_is_named_by_file_and_row_in_predicts_words(embed, predictor, bad, index):
    texts = TEXTS[:8]
    texts[index] = bad
    message = predict_error(embed, texts=texts)  # "`texts[3]` is empty or whitespace-only"
    with pytest.raises(InputError) as err:
        embed_table(predictor.embedder, as_table(texts, "s3://bucket/part-7.jsonl", first_row=40), options(CASES[0]))
    assert str(err.value) == message.replace(f"`texts[{index}]`", f"`s3://bucket/part-7.jsonl[{40 + index}]`")


def test_a_long_text_with_truncation_off_is_named_by_file_and_row_in_predicts_words(embed, predictor):
    message = predict_error(embed, texts=TEXTS, truncate=False)
    # a batch that ends one file and starts the next: the long text is row 3 of part-1
    batch = pa.concat_tables([as_table(TEXTS[:20], "part-0.txt", first_row=100), as_table(TEXTS[20:], "part-1.txt")])
    with pytest.raises(InputError) as err:
        embed_table(predictor.embedder, batch, options(dict(CASES[0], truncate=False)))
    assert str(err.value) == message.replace(f"`texts[{len(TEXTS) - 1}]`", "`part-1.txt[3]`")


def test_bad_options_fail_the_actor_before_it_loads_weights_with_predicts_words(embed, tmp_path):
    message = predict_error(embed, texts=TEXTS[:2], task=" ")
    with pytest.raises(InputError) as err:
        EmbedBatch(tmp_path / "no-weights-here", Options(task=" "))
    assert str(err.value) == message


# --- the readers -----------------------------------------------------------------------------------------


def read(fmt: str, data: bytes, text_column="text", id_column=None) -> pa.Table:
    tables = list(ray_embed.READERS[fmt](pa.BufferReader(data), f"in.{fmt}", text_column, id_column))
    return pa.concat_tables(tables) if tables else pa.table({})


def test_lines_are_split_on_newlines_without_their_endings_across_read_boundaries(monkeypatch):
    monkeypatch.setattr(ray_embed, "READ_BYTES", 3)  # lines longer than a read, and reads that end mid-line
    data = "first line\r\nsecond 南瓜\n\nlast, no newline".encode()
    assert list(ray_embed.lines(pa.BufferReader(data), "in.txt")) == [
        (1, "first line"), (2, "second 南瓜"), (3, ""), (4, "last, no newline")]


def test_a_blank_line_in_a_txt_is_a_row_and_a_blank_line_in_a_jsonl_is_not():
    assert read("txt", b"a\n\nb\n").column("text").to_pylist() == ["a", "", "b"]
    jsonl = b'{"text": "a", "id": 1}\n\n{"text": "b", "id": 2}\n'
    assert read("jsonl", jsonl, id_column="id").to_pydict() == {"text": ["a", "b"], "id": [1, 2]}


def test_csv_keeps_texts_and_ids_as_strings_and_allows_quoted_line_breaks():
    table = read("csv", b'id,body,other\n7,2024,x\n8,"two\nlines",y\n', "body", "id")
    assert table.to_pydict() == {"body": ["2024", "two\nlines"], "id": ["7", "8"]}


@pytest.mark.parametrize("fmt, data, id_column, fragment", [
    ("jsonl", b'{"text": "a"}\n{"text": "b"\n', None, "in.jsonl line 2 is not valid JSON"),
    ("jsonl", b'{"text": "a"}\n\n{"body": "b"}\n', None, "in.jsonl line 3 needs an object with a `text` field"),
    ("jsonl", b'{"text": "a"}\n{"text": 3}\n', None, "`in.jsonl[1]` must be a string, got int"),
    ("jsonl", b'{"text": "a"}\n', "id", "in.jsonl line 1 needs an object with a `id` field"),
    ("txt", b"a\n\xff\n", None, "in.txt line 2 is not UTF-8 text"),
    ("txt", b"a\n", "id", "a .txt file holds only texts, no `id` column"),
    ("csv", b"id,body\n1,a\n", None, "in.csv has no `text` column; it has id, body"),
    ("parquet", None, "missing", "in.parquet has no `missing` column; it has text"),
])
def test_a_bad_file_is_named_with_its_line_or_column(fmt, data, id_column, fragment):
    if data is None:
        sink = io.BytesIO()
        pq.write_table(pa.table({"text": ["a"]}), sink)
        data = sink.getvalue()
    with pytest.raises(InputError) as err:
        read(fmt, data, id_column=id_column)
    assert fragment in str(err.value)


def test_empty_files_have_no_rows():
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), sink)
    for fmt, data in (("txt", b""), ("jsonl", b""), ("csv", b""), ("csv", b"text\n"), ("parquet", sink.getvalue())):
        assert read(fmt, data).num_rows == 0, fmt


@pytest.mark.parametrize("name, fmt", [("a.parquet", "parquet"), ("s3://b/x/a.JSONL", "jsonl"),
                                       ("a.jsonl.gz", "jsonl"), ("a.csv.zst", "csv"), ("a.txt", "txt")])
def test_the_format_comes_from_the_name_past_a_compression_suffix(name, fmt):
    assert ray_embed.file_format(name) == fmt


# --- the job on a local Ray cluster ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    # Workers import e5 (the batch function) and scripts.ray_embed (the reader): give them the repository.
    path = str(ROOT)
    # On loopback: the test cluster talks to nothing but itself.
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def write(path: Path, texts: list[str], ids: list | None = None) -> Path:
    ids = ids if ids is not None else list(range(len(texts)))
    name = path.name
    if name.endswith(".parquet"):
        pq.write_table(pa.table({"doc_id": ids, "text": texts}), path)
    elif name.endswith(".jsonl") or name.endswith(".jsonl.gz"):
        lines = [json.dumps({"doc_id": i, "text": t}) for i, t in zip(ids, texts)]
        data = ("\n".join(lines[:2] + [""] + lines[2:]) + "\n").encode()  # with a blank line, skipped
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    elif name.endswith(".csv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["doc_id", "text"])
            w.writerows(zip(ids, texts))
    else:
        path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


def job(*args: str, actors: int = 1) -> int:
    """The job on the test cluster: 2 CPUs, so 2 actors take half a CPU each and leave one to read and write.

    Each actor's start (a process importing torch, then the checkpoint) is most of a job's time here: the
    tests that need no second actor have one.
    """
    return ray_embed.main([*args, "--actors", str(actors), "--cpus-per-actor", str(1 / actors), "--rows-per-batch", "5"])


def read_output(folder: Path) -> pa.Table:
    """The output files in name order: the job's rows in input order."""
    return pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob("*.parquet"))])


def test_the_job_embeds_every_format_in_input_order_with_two_actors(cluster, embed, checkpoint_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    spans = {"a.parquet": (0, 6), "b.jsonl": (6, 11), "c.csv": (11, 16), "d.txt": (16, 20), "e.jsonl.gz": (20, 24)}
    for name, (start, stop) in spans.items():
        write(inputs / name, TEXTS[start:stop])
    (inputs / "empty.txt").write_bytes(b"")
    (inputs / "empty.csv").write_bytes(b"")
    out = tmp_path / "out"

    assert job(str(inputs), "--output", str(out), "--weights", str(checkpoint_dir), "--input-type", "document",
               actors=2) == 0

    table = read_output(out)
    assert table.column_names == ["file", "row", "embedding", "token_count", "truncated"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 1024)
    expected_places = [(str(inputs / name), row) for name, (start, stop) in spans.items() for row in range(stop - start)]
    assert list(zip(table.column("file").to_pylist(), table.column("row").to_pylist())) == expected_places
    expected = embed(texts=TEXTS, input_type="document")
    assert np.abs(vectors_of(table) - np.asarray(expected.embeddings, dtype=np.float32)).max() < 1e-5
    assert table.column("token_count").to_pylist() == expected.token_counts
    assert table.column("truncated").to_pylist() == expected.truncated


def test_the_job_carries_ids_across_files_with_a_query_preset(cluster, embed, checkpoint_dir, tmp_path, capsys):
    inputs = [write(tmp_path / f"part-{k}.parquet", TEXTS[k * 8:(k + 1) * 8], [f"doc-{k}-{i}" for i in range(8)])
              for k in range(3)]
    out = tmp_path / "out"

    assert job(*map(str, inputs), "--output", str(out), "--weights", str(checkpoint_dir), "--task", "sts",
               "--id-column", "doc_id", actors=2) == 0

    said = re.search(r"ray_embed: 24 texts -> .* \((\S+) texts/s\)", capsys.readouterr().out)
    assert said and float(said.group(1)) > 0, "the rate, in as many digits as a slow start needs"
    table = read_output(out)
    assert table.column_names == ["doc_id", "embedding", "token_count", "truncated"]
    assert table.column("doc_id").to_pylist() == [f"doc-{k}-{i}" for k in range(3) for i in range(8)]
    expected = embed(texts=TEXTS, task="sts")
    assert np.abs(vectors_of(table) - np.asarray(expected.embeddings, dtype=np.float32)).max() < 1e-5


def test_a_bad_record_fails_the_job_naming_its_file_and_row(cluster, checkpoint_dir, tmp_path, capsys):
    good = write(tmp_path / "a.jsonl", TEXTS[:4])
    bad = write(tmp_path / "b.jsonl", TEXTS[:3] + ["  "] + TEXTS[3:6])

    assert job(str(good), str(bad), "--output", str(tmp_path / "out"), "--weights", str(checkpoint_dir)) == 1
    assert f"ray_embed: `{bad}[3]` is empty or whitespace-only" in capsys.readouterr().err


def test_inputs_with_no_texts_end_the_job_with_a_message(cluster, checkpoint_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "empty.txt").write_bytes(b"")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), inputs / "empty.parquet")

    assert job(str(inputs), "--output", str(tmp_path / "out"), "--weights", str(checkpoint_dir)) == 1
    assert "the inputs hold no texts" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_a_checkpoint_of_the_wrong_width_fails_in_one_line_and_leaves_no_output(cluster, tmp_path, capsys,
                                                                               monkeypatch):
    """An actor that cannot load the weights fails the job with the engine's message, not Ray's traceback, and
    the output folder the job created is gone, so the corrected rerun is not refused."""
    narrow = write_checkpoint(tmp_path / "narrow", hidden_size=256, num_attention_heads=4, intermediate_size=512)
    texts = write(tmp_path / "a.txt", TEXTS[:3])
    out = tmp_path / "out"
    monkeypatch.setenv("E5_DIMENSIONS", "1024")  # the actors inherit the driver's environment
    assert job(str(texts), "--output", str(out), "--weights", str(narrow)) == 1
    err = capsys.readouterr().err
    assert err.startswith("ray_embed: ") and "256" in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_an_existing_output_is_kept_unless_overwrite_is_given(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.parquet").write_bytes(b"earlier results")
    assert ray_embed.main([str(tmp_path), "--output", str(tmp_path / "out")]) == 1
    assert "add --overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "old.parquet").read_bytes() == b"earlier results"


def test_missing_weights_stop_the_job_before_any_actor_starts(cluster, tmp_path, capsys):
    texts = write(tmp_path / "a.txt", TEXTS[:2])
    assert ray_embed.main([str(texts), "--output", str(tmp_path / "out"), "--weights", str(tmp_path / "none")]) == 1
    assert f"ray_embed: weights directory {tmp_path / 'none'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
