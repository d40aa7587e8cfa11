"""Bulk jobs: `texts_file` in four formats (gzipped or not), vectors streamed to .npy or .jsonl, every bad file
refused with a message that names the line or item, and no result file left behind."""

from __future__ import annotations

import asyncio
import csv
import gc
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from testkit.uploads import as_upload
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e5 import InputError
from e5.bulk import RESULT_PREFIX, ResultFile, remove_abandoned_results, remove_server_spills
from e5.files import PIECE_BYTES, open_texts_file, read_chunks, record_limit
from e5.validation import Limits

TEXTS = [f"document {i}: the protein female eat 南瓜 的 家常 做法" + " der" * (i % 7) for i in range(10)]


def encode(suffix: str, texts: list[str]) -> bytes:
    """`texts` as a file of this suffix (.txt, .jsonl, .json, .csv, each maybe + .gz)."""
    if suffix.endswith(".gz"):
        return gzip.compress(encode(suffix.removesuffix(".gz"), texts))
    if suffix == ".txt":
        return ("\n".join(texts) + "\n").encode()
    if suffix == ".jsonl":
        return "".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)).encode()
    if suffix == ".json":
        return json.dumps(texts).encode()
    out = io.StringIO(newline="")
    w = csv.writer(out)
    w.writerow(["id", "text"])
    w.writerows([i, t] for i, t in enumerate(texts))
    return out.getvalue().encode()


def write(path, texts):
    path.write_bytes(encode("".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix, texts))
    return path


def read(path, limits=Limits(), max_texts=4096, max_chars=10**9) -> list[list[str]]:
    return list(read_chunks(open_texts_file(path, limits), limits, max_texts, max_chars))


def texts_of(path, limits=Limits()) -> list[str]:
    return [t for chunk in read(path, limits) for t in chunk]


@pytest.fixture
def result_root(tmp_path, monkeypatch):
    """A temp directory of this test's own, where result files go."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def leftovers(root) -> list[str]:
    gc.collect()
    return sorted(p.name for p in root.iterdir() if p.name.startswith("e5-"))


# --- reading, without the model ---------------------------------------------------------------------------

FORMATS = [".txt", ".jsonl", ".json", ".csv"]


@pytest.mark.parametrize("suffix", FORMATS + [f + ".gz" for f in FORMATS])
def test_each_format_gives_the_texts_in_order(tmp_path, suffix):
    assert texts_of(write(tmp_path / f"in{suffix}", TEXTS)) == TEXTS


@pytest.mark.parametrize(
    "name, content, fmt",
    [  # what Cog names an upload by its MIME type: octet-stream -> .bin, x-ndjson -> no suffix, gzip -> .gz
        ("file.bin", encode(".jsonl", TEXTS), "jsonl"),
        ("file", encode(".jsonl", TEXTS), "jsonl"),
        ("file", b"  \n" + encode(".json", TEXTS), "json"),
        ("file.bin", encode(".csv", TEXTS), "csv"),
        ("file.bin", encode(".txt", TEXTS), "txt"),
        ("file.gz", encode(".csv.gz", TEXTS), "csv"),
        ("file.gz", encode(".txt.gz", TEXTS), "txt"),
        ("corpus.jsonl", encode(".jsonl.gz", TEXTS), "jsonl"),  # gzip by its magic bytes, whatever the name
    ],
)
def test_a_file_whose_name_says_nothing_is_read_by_its_content(tmp_path, name, content, fmt):
    path = tmp_path / name
    path.write_bytes(content)
    texts_file = open_texts_file(path, Limits())
    assert texts_file.format == fmt
    assert texts_of(path) == TEXTS


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".jsonl"])
def test_a_utf8_byte_order_mark_is_not_part_of_the_first_text(tmp_path, suffix):
    path = tmp_path / f"excel{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + encode(suffix, TEXTS))
    assert texts_of(path) == TEXTS


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_line_ending_is_one_line_break(tmp_path, newline):
    for suffix in (".txt", ".csv"):
        path = tmp_path / f"in{suffix}"
        path.write_bytes(encode(suffix, TEXTS).replace(b"\r\n", b"\n").replace(b"\n", newline.encode()))
        assert texts_of(path) == TEXTS, suffix


def test_a_crlf_split_between_two_pieces_is_one_line_break(tmp_path):
    first = "a" * (PIECE_BYTES - 1)  # its \r ends the first piece read, its \n starts the next
    path = tmp_path / "split.txt"
    path.write_bytes(f"{first}\r\nsecond\r\n".encode())
    assert texts_of(path) == [first, "second"]


def test_a_multi_line_csv_field_is_one_text(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_bytes(b'id,text\r\n1,"first line\r\nsecond line"\r\n2,next\r\n')
    assert texts_of(path) == ["first line\nsecond line", "next"]


def test_blank_lines_at_the_end_are_ignored_and_rows_stay_lines(tmp_path):
    for suffix, content in [(".txt", "a\nb\n\n \n\n"), (".jsonl", '{"text": "a"}\n{"text": "b"}\n\n\n'),
                            (".csv", "text\na\nb\n\n\n")]:
        path = tmp_path / f"end{suffix}"
        path.write_text(content, encoding="utf-8")
        assert texts_of(path) == ["a", "b"], suffix


def test_chunks_are_cut_by_texts_and_by_characters(tmp_path):
    path = write(tmp_path / "in.txt", ["a" * 10] * 7)
    assert [len(c) for c in read(path, max_texts=3)] == [3, 3, 1]
    assert [len(c) for c in read(path, max_chars=25)] == [2, 2, 2, 1]  # 3 texts would be 30 characters


def test_a_long_json_string_with_escapes_is_decoded(tmp_path):
    text = "南瓜 \"quoted\" \\ back\n" * 3000
    path = tmp_path / "escaped.json"
    path.write_text(json.dumps([text, "short"]), encoding="ascii")  # every non-ASCII character as \uXXXX
    assert texts_of(path) == [text, "short"]


LIMITS = Limits(max_chars_per_text=1000, max_file_bytes=1_000_000)
OVER = record_limit(1000) + 1  # bytes in a line past the limit of a 1,000-character text


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("blank.txt", b"one\n\nthree\n", "`texts_file` line 2 is empty or whitespace-only (blank lines may only end"),
        ("blank.jsonl", b'{"text": "a"}\n\n{"text": "b"}\n', "`texts_file` line 2 is empty or whitespace-only"),
        ("bad.jsonl", b'{"text": "a"}\n{"txt": "b"}\n', "`texts_file` line 2 needs an object with a `text` field"),
        ("broken.jsonl", b'{"text": "a"}\n{oops\n', "`texts_file` line 2 is not valid JSON"),
        ("num.jsonl", b'{"text": 5}\n', "`texts_file` line 1 must be a string, got int"),
        ("surrogate.jsonl", b'{"text": "a\\ud800"}\n', "`texts_file` line 1 is not valid Unicode: lone surrogate U+D800"),
        ("obj.json", b'{"text": "a"}', "`texts_file` (.json) must hold a list of strings"),
        ("num.json", b'["a", 3]', "`texts_file` item 1 must be a string, got a number (offset 6 of the file)"),
        ("null.json", b'["a", "b", null]', "`texts_file` item 2 must be a string, got null"),
        ("comma.json", b'["a" "b"]', "`texts_file` is not valid JSON after item 0: expected ',' or ']'"),
        ("trailing.json", b'["a"] ["b"]', "`texts_file` is not valid JSON: more data after the list (offset 6"),
        ("unclosed.json", b'["a", "b', "`texts_file` ends inside item 1: its string is never closed"),
        ("control.json", b'["a\tb"]', "`texts_file` item 0 is not a valid JSON string: Invalid control character"),
        ("nocol.csv", b"id,body\n1,a\n", "`texts_file` (.csv) needs a column named exactly `text`; its header (line 1) has 2 fields, none named so"),
        ("short.csv", b"id,text\n1,a\n2\n", "`texts_file` line 3 has 1 fields; `text` is field 2 of the header's 2"),
        ("empty-field.csv", b"id,text\n1,\n", "`texts_file` line 2 is empty or whitespace-only"),
        ("data.parquet", b"PAR1", "`texts_file` is a .parquet file; send .txt, .jsonl, .json or .csv"),
        ("table.tsv", b"id\ttext\n", "`texts_file` is a .tsv file"),
        ("archive.zip", b"PK\x03\x04\x14\x00", "`texts_file` is a .zip file"),
        ("file.bin", b"PK\x03\x04\x14\x00", "`texts_file` is a zip archive"),
        ("utf16.txt", "hello\n".encode("utf-16"), "`texts_file` is UTF-16 text"),
        ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "`texts_file` line 3 holds a NUL byte (offset 8 of the file): binary"),
        ("zeros.bin", b"\x00" * 4096, "`texts_file` line 1 holds a NUL byte (offset 0 of the file)"),
        ("latin1.txt", "ok\ncafé\n".encode("latin-1"), "`texts_file` line 2 is not UTF-8 text: byte 0xE9 at offset 6 of the file"),
        ("long.txt", b"x" * 1001 + b"\n", "`texts_file` line 1 has 1001 characters; the limit is 1000"),
        ("longer.txt", b"ok\n" + b"x" * OVER, f"`texts_file` line 2 is over {OVER - 1} bytes; the limit is 1000 characters per text"),
        ("long.jsonl", b'{"text": "' + b"x" * OVER + b'"}\n', "`texts_file` line 1 is over"),
        ("long.json", b'["' + b"x" * OVER + b'"]', "`texts_file` item 0 is over"),
        ("long.csv", b'text\n"' + b"x" * OVER + b'"\n', "`texts_file` line 2 is over"),
        ("unclosed.csv", b'id,text\n1,"abc\n' + b"2,more\n" * (OVER // 7),
         f"`texts_file` record starting on line 2 is over {OVER - 1} bytes (a quote never closed?); the limit is 1000"),
        ("big.txt", b"a\n" * 500_001, "`texts_file` has 1000002 bytes; the limit is 1000000 (E5_MAX_FILE_BYTES)"),
        ("bomb.txt.gz", gzip.compress(b"x" * 499 + b"\n") * 4_000, "`texts_file` decompresses to more than 1000000 bytes"),
        ("cut.txt.gz", gzip.compress(b"hello\n" * 1000)[:-30], "`texts_file` is not a valid gzip stream"),
        ("file.bin", b'["a", 3]', "item 1 must be a string, got a number (offset 6 of the file) (read as .json, sniffed"),
    ],
)
def test_bad_files_are_refused_naming_the_line_or_item_and_the_limit(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        texts_of(path, LIMITS)
    assert fragment in str(err.value)


def test_a_bad_byte_is_named_by_its_offset_in_the_file(tmp_path):
    path = tmp_path / "late.txt"
    path.write_bytes(b"".join(b"%07d\n" % i for i in range(15_000)) + b"caf\xe9\n")  # 120,000 bytes, then café
    with pytest.raises(InputError, match="`texts_file` line 15001 is not UTF-8 text: byte 0xE9 at offset 120003 of"):
        texts_of(path)


file_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from([b"a", b"\n", b"\r", b'"', b",", b"[", b"]", b"{", b"}", b":", b"\\", b" ", b"text",
                              b"\xef\xbb\xbf", b"\xe9", b"\x00", "南".encode()]), max_size=60).map(b"".join),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(content=file_bytes, name=st.sampled_from(["in.txt", "in.jsonl", "in.json", "in.csv", "file.bin"]))
def test_any_bytes_give_texts_or_a_named_error(tmp_path_factory, content, name):
    path = tmp_path_factory.mktemp("any") / name
    path.write_bytes(content)
    try:
        texts = texts_of(path, LIMITS)
    except InputError as err:
        assert str(err).startswith("`texts_file`"), str(err)
        return
    assert all(isinstance(t, str) and t.strip() for t in texts)


line_text = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\x85"),
                    min_size=1, max_size=40).filter(str.strip)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(texts=st.lists(line_text, min_size=1, max_size=8), suffix=st.sampled_from(FORMATS + [".csv.gz", ".json.gz"]))
def test_texts_written_in_any_format_read_back_the_same(tmp_path_factory, texts, suffix):
    path = write(tmp_path_factory.mktemp("round") / f"in{suffix}", texts)
    assert texts_of(path) == texts


# --- result files -----------------------------------------------------------------------------------------


def test_a_result_folder_goes_with_its_path_and_an_abandoned_one_with_the_next_job(tmp_path):
    result = ResultFile("npy", 1, 4, root=tmp_path)
    result.write(np.ones((1, 4), np.float32))
    path = result.finish()
    assert np.load(path).shape == (1, 4)
    del path
    gc.collect()
    assert list(tmp_path.iterdir()) == []

    # A worker killed mid-job leaves its folder; while it lives, no one else removes it.
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from e5.bulk import ResultFile; "
         f"r = ResultFile('npy', 1, 4, root={str(tmp_path)!r}); print(r.folder, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent,
    )
    folder = child.stdout.readline().strip()
    assert folder.startswith(str(tmp_path / RESULT_PREFIX))
    assert remove_abandoned_results(tmp_path) == []
    child.kill()
    child.wait()
    assert [str(p) for p in remove_abandoned_results(tmp_path)] == [folder]
    assert list(tmp_path.iterdir()) == []


def test_the_servers_old_output_spills_are_deleted_and_its_folders_kept(tmp_path):
    now = time.time()
    old, new, other = (tmp_path / "pred_a/outputs/spill_1.json", tmp_path / "pred_b/outputs/spill_2.json",
                       tmp_path / "pred_a/outputs/0.png")
    for path in (old, new, other):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    for path in (old, other):
        os.utime(path, (now - 61, now - 61))
    assert remove_server_spills(tmp_path, min_age_s=60, now=now) == 100
    assert not old.exists() and new.exists() and other.exists() and old.parent.is_dir()


# --- through predict() ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def direct(predictor, loop):
    from conftest import DEFAULTS

    out = loop.run_until_complete(predictor.predict(**{**DEFAULTS, "texts": TEXTS, "input_type": "document"}))
    return np.array(out.embeddings, dtype=np.float32), out.token_counts


@pytest.mark.parametrize("suffix", FORMATS + [".txt.gz", ".jsonl.gz", ".csv.gz"])
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
    "content, fragment",
    [
        ("", "`texts_file` holds no texts (it is empty, or only blank lines)"),
        ("\n\n \r\n", "`texts_file` holds no texts"),
        ("a\n" * 6, "`texts_file` has more than 5 texts; the limit is 5 (E5_MAX_FILE_TEXTS)"),
    ],
)
def test_an_empty_or_too_long_file_is_refused(embed, predictor, tmp_path, monkeypatch, content, fragment):
    monkeypatch.setattr(predictor.service, "limits", Limits(max_file_texts=5))
    path = tmp_path / "in.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        embed(texts_file=path)


@pytest.mark.parametrize(
    "inputs, fragment",
    [
        (dict(texts=["a"]), "give `texts` or `texts_file`, not both"),
        (dict(documents=["a"]), "`documents` are ranked against `texts`; a `texts_file` request cannot have them"),
        (dict(top_k=2), "`top_k` ranks `documents`, which a `texts_file` request cannot have"),
        (dict(encoding_format="int8"), "`texts_file` results are float32 files"),
    ],
)
def test_options_that_do_not_apply_to_a_file_are_refused(embed, tmp_path, inputs, fragment):
    with pytest.raises(InputError, match=fragment.replace("(", r"\(")):
        embed(texts_file=write(tmp_path / "in.txt", TEXTS), **inputs)


def test_with_truncate_off_a_long_text_is_found_before_any_forward(embed, predictor, tmp_path, monkeypatch, result_root):
    monkeypatch.setattr("e5.service.FILE_CHUNK_TEXTS", 4)  # the long text is in the second chunk
    texts = TEXTS[:6] + ["the protein female eat " * 300]
    forwards = predictor.embedder.forward_calls
    with pytest.raises(InputError, match=r"`texts_file\[6\]` has \d+ tokens; the limit is 512"):
        embed(texts_file=write(tmp_path / "long.txt", texts), input_type="document", truncate=False)
    assert predictor.embedder.forward_calls == forwards
    assert leftovers(result_root) == []


def test_no_result_file_outlives_its_job(embed, predictor, loop, tmp_path, monkeypatch, result_root):
    from conftest import DEFAULTS

    out = embed(texts_file=write(tmp_path / "in.txt", TEXTS), input_type="document")
    assert leftovers(result_root) == [out.embeddings_file.parent.name]  # kept while the caller holds it
    del out
    assert leftovers(result_root) == []

    # Cancelled after its first chunk is on disk: the partial file goes with it.
    monkeypatch.setattr("e5.service.FILE_CHUNK_TEXTS", 64)
    path = write(tmp_path / "many.txt", [f"query {i} protein" for i in range(2000)])

    async def cancel_midway():
        job = asyncio.ensure_future(predictor.predict(**{**DEFAULTS, "texts_file": as_upload(path), "input_type": "document"}))
        while not any(p.stat().st_size > 64 * 4096 for p in result_root.glob(f"{RESULT_PREFIX}*/*")):
            await asyncio.sleep(0.01)
            assert not job.done(), job
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    loop.run_until_complete(cancel_midway())
    assert leftovers(result_root) == []

    # Failed midway (a forward that raises): likewise.
    from e5.batcher import Batcher

    calls = {"n": 0}
    embed_chunk = Batcher.embed

    async def fail_second_chunk(self, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("a forward failed")
        return await embed_chunk(self, *args)

    monkeypatch.setattr(Batcher, "embed", fail_second_chunk)
    with pytest.raises(RuntimeError, match="a forward failed"):
        embed(texts_file=path, input_type="document")
    assert calls["n"] == 2 and leftovers(result_root) == []


# --- defects found by trying the readers as a hostile user would ----------------------------------------


def test_a_csv_header_without_text_names_no_cell_of_it(tmp_path):
    path = tmp_path / "private.csv"
    path.write_bytes(b"patient_name,diagnosis\nJane Roe,flu\n")
    with pytest.raises(InputError) as err:
        texts_of(path)
    assert "patient_name" not in str(err.value) and "diagnosis" not in str(err.value)
    assert "has 2 fields, none named so" in str(err.value)
    path.write_bytes(b"id, Text\n1,a\n")
    with pytest.raises(InputError, match="field 2 is `text` in other case or with spaces"):
        texts_of(path)


def test_a_csv_quote_never_closed_is_an_error_not_the_rest_of_the_file(tmp_path):
    path = tmp_path / "open.csv"
    path.write_bytes(b'text\nfirst\n"second, never closed\nthird\nfourth\n')
    with pytest.raises(InputError, match="line 3 is not valid CSV: a quote opened in this record is never closed"):
        texts_of(path)


def test_a_jsonl_number_python_cannot_read_gets_a_named_error(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "ok", "n": ' + "9" * 5000 + "}\n")
    with pytest.raises(InputError, match=r"line 2 holds a number of more than \d+ digits, which cannot be read"):
        texts_of(path)


def test_a_deeply_nested_jsonl_line_gets_a_named_error(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "ok"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(InputError, match="line 2 nests lists or objects too deeply to read"):
        texts_of(path)
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="item 0 must be a string, got a list"):
        texts_of(path)


def test_a_cut_off_or_trailing_garbage_gzip_names_the_byte_it_breaks_at(tmp_path):
    whole = gzip.compress(("\n".join(TEXTS) + "\n").encode() * 50)
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match=rf"not a valid gzip stream at byte {len(whole) // 2} of the file .*cut off"):
        texts_of(path)
    path.write_bytes(whole + b"garbage!")
    with pytest.raises(InputError, match=rf"not a valid gzip stream at byte {len(whole)} of the file"):
        texts_of(path)
    path.write_bytes(whole + b"\0" * 100 + whole)  # two members with zero padding between: fine
    assert len(texts_of(path)) == 2 * 50 * len(TEXTS)


def test_many_empty_gzip_members_are_refused_by_their_count(tmp_path):
    from e5.files import MAX_GZIP_MEMBERS

    path = tmp_path / "members.txt.gz"
    path.write_bytes(gzip.compress(b"") * (MAX_GZIP_MEMBERS + 5) + gzip.compress(b"one line\n"))
    with pytest.raises(InputError, match=rf"holds more than {MAX_GZIP_MEMBERS} gzip members"):
        texts_of(path)
    path.write_bytes(gzip.compress(b"a\n") * 100)  # `cat a.gz b.gz ...`
    assert texts_of(path) == ["a"] * 100


def test_an_unnamed_upload_whose_first_line_is_text_is_read_as_text(tmp_path):
    path = tmp_path / "upload"
    path.write_bytes(b"text\nhello, world\n")
    assert texts_of(path) == ["text", "hello, world"]
    path.write_bytes(b"id,text\n1,\"hello, world\"\n")  # a real header is still a header
    assert texts_of(path) == ["hello, world"]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_text_of_astral_characters_at_the_limit_is_read_from_json_as_from_texts(tmp_path, suffix):
    limits = Limits(max_chars_per_text=60_000)
    text = "😀" * 60_000  # json.dumps writes each as a 12-byte surrogate pair escape
    path = tmp_path / f"emoji{suffix}"
    path.write_text(json.dumps([text]) if suffix == ".json" else json.dumps({"text": text}) + "\n")
    assert texts_of(path, limits) == [text]


@pytest.mark.parametrize(
    "name, content",
    [
        ("a.csv", b"SECRET_NAME,SECRET_SSN\nx,y\n"),
        ("a.csv", b"id,text\n1,\"SECRET never closed\n2,b\n"),
        ("a.csv", b"id,text\n1\n"),
        ("a.csv", b'id,text\n1,"SECRET"x\n'),
        ("a.jsonl", b'{"SECRET": "no text field"}\n'),
        ("a.jsonl", b'{"text": "SECRET", \n'),
        ("a.jsonl", b'{"text": SECRET}\n'),
        ("a.jsonl", b'{"text": 12345678901234567890}\n'),
        ("a.json", b'["ok", SECRET]'),
        ("a.json", b'["ok" SECRET]'),
        ("a.json", b'["SECRET\\x"]'),
        ("a.txt", b"ok\n\nSECRET\n"),
        ("a.txt", b"SECRET \xff\n"),
        ("a.txt.gz", gzip.compress(b"SECRET\n") + b"SECRET"),
        ("upload", b"SECRET_A,SECRET_B\n1,2\n"),
    ],
)
def test_no_error_from_a_file_quotes_its_content(tmp_path, name, content):
    """coglet logs a failed prediction's error: it must say where and why, never what the file holds."""
    path = tmp_path / name
    path.write_bytes(content)
    try:
        texts_of(path)
    except InputError as err:
        assert "SECRET" not in str(err), str(err)
        assert "1234567890" not in str(err), str(err)
    else:
        assert name == "upload"  # read as text: no error to check
