"""The bulk model (cog.bulk.yaml, predict_bulk.py) on the real Cog server started as Replicate starts it, with
`--upload-url` at a local upload target (scripts/upload_target.py), and its schema in place.

A job's shards and manifest arrive at the target, the response holds only their addresses, and the array the
README's lines rebuild from them equals the vectors of the same texts through the main model. A bad record
fails the job before any embedding, naming its line; a cancelled job stops at once and leaves no files.
Shards are 1 MiB here (E5_BULK_SHARD_MB) so that a few thousand texts make several.
"""

from __future__ import annotations

import dataclasses
import gzip
import http.client
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.loadtest import TOLERANCE
from e5.errors import InputError
from e5.shards import MANIFEST, load_vectors, rows_per_shard
from scripts.upload_target import UploadTarget
from testkit.cog_server import BulkCogServer

TEXTS = [f"passage {i}: {['protein', '南瓜', 'Wasser', 'эмбеддинг'][i % 4]} and {i % 13} more" for i in range(1500)]
SHARD_MB = 1  # 256 rows of 1,024 float32 a shard: 1,500 texts make 6


# --- the shards, without a server ---------------------------------------------------------------------------


@pytest.mark.parametrize("output_format", ["npy", "jsonl"])
def test_shards_split_rows_across_chunks_and_the_manifest_rebuilds_them_in_order(tmp_path, output_format):
    from e5.shards import ShardWriter

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((23, 8)).astype(np.float32)
    writer = ShardWriter(tmp_path, output_format, 23, 8, "m", rows_per_shard=5)
    done = []
    for start, stop in ((0, 7), (7, 8), (8, 21), (21, 23)):  # chunks that end inside shards
        done += writer.add(vectors[start:stop], [3] * (stop - start), [i in (4, 20) for i in range(start, stop)])
    assert [p.name for p in done] == [f"vectors-{r:09d}.{output_format}" for r in (0, 5, 10, 15, 20)]
    manifest = json.loads(writer.finish().read_text())
    assert [(s["first_row"], s["rows"]) for s in manifest["shards"]] == [(0, 5), (5, 5), (10, 5), (15, 5), (20, 3)]
    assert manifest["truncated_rows"] == [4, 20] and manifest["tokens"] == 69 and manifest["model"] == "m"
    np.testing.assert_allclose(load_vectors(tmp_path / MANIFEST), vectors, rtol=1e-6, atol=1e-8)  # jsonl: 8 decimals


def test_a_manifest_is_refused_while_rows_are_missing(tmp_path):
    from e5.shards import ShardWriter

    writer = ShardWriter(tmp_path, "npy", 10, 4, "m", rows_per_shard=4)
    writer.add(np.zeros((6, 4), np.float32), [1] * 6, [False] * 6)
    with pytest.raises(RuntimeError, match="6 of 10 rows"):
        writer.finish()


def test_shard_size_from_the_environment():
    from e5.shards import SHARD_BYTES, shard_bytes_from_env

    assert shard_bytes_from_env({}) == SHARD_BYTES == 48 * 2**20
    assert shard_bytes_from_env({"E5_BULK_SHARD_MB": "8"}) == 8 * 2**20
    assert rows_per_shard("npy", 1024) == 12_288 and rows_per_shard("jsonl", 1024) == 3_510
    with pytest.raises(ValueError, match="E5_BULK_SHARD_MB"):
        shard_bytes_from_env({"E5_BULK_SHARD_MB": "lots"})


def test_more_texts_than_the_bulk_limit_are_refused_before_any_embedding_with_the_way_out(predictor, loop, tmp_path):
    from e5.validation import Request
    from testkit.uploads import as_upload

    path = tmp_path / "t.txt"
    path.write_text("a\n" * 7)
    service = predictor.service
    old = service.limits
    service.limits = dataclasses.replace(old, max_bulk_texts=5)
    try:
        async def run():
            return [p async for p in service.embed_file_shards(Request(texts_file=as_upload(path)), tmp_path)]

        with pytest.raises(InputError, match=r"the limit is 5 \(E5_MAX_BULK_TEXTS\): split the file"):
            loop.run_until_complete(run())
    finally:
        service.limits = old
    assert list(tmp_path.glob("vectors-*")) == []


def test_long_texts_mean_gives_each_row_the_whole_texts_vector(predictor, loop, tmp_path):
    """The bulk path with `long_texts` mean: one row per text, each the mean of its windows, as a request gets."""
    from e5.validation import Options, Request
    from testkit.uploads import as_upload

    long = " ".join(f"Chapter {i}: the ledger kept {i * 7} pages." for i in range(200))
    path = tmp_path / "t.txt"
    path.write_text(f"short one\n{long}\n", encoding="utf-8")
    options = Options(input_type="document", long_texts="mean")
    service = predictor.service

    async def run():
        return [p async for p in service.embed_file_shards(Request(texts_file=as_upload(path), options=options),
                                                            tmp_path / "out")]

    (tmp_path / "out").mkdir()
    files = loop.run_until_complete(run())
    manifest = json.loads(next(f for f in files if f.name == MANIFEST).read_text())
    vectors = load_vectors(tmp_path / "out" / MANIFEST)
    direct, _ = loop.run_until_complete(service.run(Request(texts=["short one", long], options=options)))
    assert vectors.shape == (2, 1024) and float(np.abs(vectors - np.asarray(direct.embeddings)).max()) < TOLERANCE
    assert manifest["tokens"] == sum(direct.token_counts) and direct.token_counts[1] > 512


def test_progress_is_logged_within_a_chunk_too(predictor, loop, tmp_path, monkeypatch, capsys):
    import re

    import e5.service
    from e5.validation import Request
    from testkit.uploads import as_upload

    monkeypatch.setattr(e5.service, "PROGRESS_S", 0.001)
    path = tmp_path / "t.txt"
    path.write_text("".join(t + "\n" for t in TEXTS[:600]))

    async def run():
        return [p async for p in predictor.service.embed_file_shards(Request(texts_file=as_upload(path)), tmp_path)]

    files = loop.run_until_complete(run())
    assert files[-1].name == MANIFEST
    lines = re.findall(r"e5: (\d+)/600 texts \(\d+%\), \d+ texts/s, \d+ tokens/s, (\S+)", capsys.readouterr().out)
    assert any(0 < int(done) < 600 for done, _ in lines), lines  # within the one chunk of 600
    assert lines[-1] == ("600", "done")


def test_a_shard_that_cannot_be_written_fails_the_job_saying_so(predictor, loop, tmp_path, monkeypatch):
    import errno

    import e5.bulk
    from e5.errors import EngineError
    from e5.validation import Request
    from testkit.uploads import as_upload

    def full(self, vectors):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(e5.bulk.VectorWriter, "write", full)
    path = tmp_path / "t.txt"
    path.write_text("a\nb\n")
    folder = tmp_path / "out"
    folder.mkdir()

    async def run():
        return [p async for p in predictor.service.embed_file_shards(Request(texts_file=as_upload(path)), folder)]

    held = predictor.service.budget.in_use_bytes  # earlier tests' holds may still be running out
    with pytest.raises(EngineError, match=r"could not write the vectors to .*out \(No space left on device\)"):
        loop.run_until_complete(run())
    assert predictor.service.budget.in_use_bytes <= held  # its own reservation went back


# --- the bulk model on the real server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bulk(checkpoint_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bulk")
    (root / "tmp").mkdir()
    with UploadTarget(root / "uploaded") as target:
        server = BulkCogServer(checkpoint_dir, root / "work", upload_url=target.url, log_path=root / "server.log",
                               env={"E5_BULK_SHARD_MB": str(SHARD_MB), "TMPDIR": str(root / "tmp")})
        with server:
            assert server.wait_until() == "READY", (root / "server.log").read_text()[-3000:]
            yield server, target, root


def data_url(mime: str, content: bytes) -> str:
    import base64

    return f"data:{mime};base64,{base64.b64encode(content).decode()}"


def readme_rebuild() -> str:
    """The README's Python block that rebuilds a bulk job's array from its URLs."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The bulk model", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def job_folders(root) -> list:
    return sorted((root / "tmp").glob("e5-result-*"))


def test_a_job_s_shards_and_manifest_arrive_at_the_upload_target_and_rebuild_the_main_model_s_vectors(
        bulk, embed):
    server, target, root = bulk
    body = gzip.compress("".join(t + "\n" for t in TEXTS).encode())
    status, out = server.predict({"texts_file": data_url("application/gzip", body)})
    assert status == 200 and out["status"] == "succeeded", out.get("error") or out
    urls = out["output"]
    rows = rows_per_shard("npy", 1024, SHARD_MB * 1024 * 1024)
    assert len(urls) == -(-len(TEXTS) // rows) + 1 and all(u.startswith(target.url) for u in urls)
    assert len(json.dumps(out)) < 20_000  # addresses, not vectors
    names = [u.rsplit("/", 1)[1] for u in urls]
    assert MANIFEST in names and sorted(target.received) == sorted(names)
    manifest = json.loads((target.folder / MANIFEST).read_text())
    assert manifest["rows"] == len(TEXTS) and manifest["dimensions"] == 1024 and manifest["format"] == "npy"
    assert [s["first_row"] for s in manifest["shards"]] == list(range(0, len(TEXTS), rows))
    assert all(s["file"] == f"vectors-{s['first_row']:09d}.npy" for s in manifest["shards"])
    assert manifest["truncated_rows"] == [] and manifest["tokens"] > len(TEXTS)

    direct = np.asarray(embed(texts=TEXTS, input_type="document").embeddings, dtype=np.float32)
    rebuilt = load_vectors(target.folder / MANIFEST)
    assert rebuilt.shape == direct.shape and np.abs(rebuilt - direct).max() < TOLERANCE
    scope = {"urls": urls}
    exec(readme_rebuild(), scope)  # the README's lines, as written, on the URLs the server answered
    assert np.abs(scope["vectors"] - direct).max() < TOLERANCE
    logs = out["logs"]
    assert f"{len(TEXTS)}/{len(TEXTS)} texts (100%)" in logs and "tokens/s" in logs and "done" in logs


def test_jsonl_shards_carry_their_global_rows(bulk):
    server, target, _ = bulk
    texts = TEXTS[:300]
    status, out = server.predict({"texts_file": data_url("text/plain", "\n".join(texts).encode()), "output_format": "jsonl",
                                  "input_type": "query", "task": "sts"})
    assert out["status"] == "succeeded", out.get("error")
    manifest = json.loads((target.folder / MANIFEST).read_text())
    assert manifest["format"] == "jsonl" and manifest["rows"] == 300
    indices = []
    for shard in manifest["shards"]:
        indices += [json.loads(line)["index"] for line in (target.folder / shard["file"]).read_text().splitlines()]
    assert indices == list(range(300))
    assert load_vectors(target.folder / MANIFEST).shape == (300, 1024)


def test_a_bad_record_fails_the_job_before_any_embedding_naming_its_line(bulk):
    server, target, root = bulk
    before, folders = list(target.received), job_folders(root)
    lines = TEXTS + ["ok", "   ", "after"]  # line 1,502 is blank: a record without text
    jsonl = "".join(json.dumps({"text": t}) + "\n" for t in lines).encode()
    status, out = server.predict({"texts_file": data_url("application/jsonl", jsonl)})
    assert out["status"] == "failed" and f"line {len(TEXTS) + 2} is empty" in out["error"], out.get("error")
    assert target.received == before  # nothing was uploaded
    assert "texts/s" not in out["logs"]  # no embedding ran
    assert set(job_folders(root)) <= set(folders)  # its own folder is gone (earlier jobs' go 30 s after them)


def test_a_cancelled_job_stops_at_once_and_leaves_no_files(bulk):
    server, target, root = bulk
    folders = job_folders(root)
    many = (TEXTS * 20)[:30_000]
    body = json.dumps({"input": {"texts_file": data_url("text/plain", "\n".join(many).encode())}}).encode()
    answer = {}

    def run_job():
        try:
            answer.update(zip(("status", "body"), server.post("/predictions/bulk-cancel-test", body, method="PUT")))
        except http.client.RemoteDisconnected:  # coglet at times closes a cancelled sync request's connection
            answer["dropped"] = True

    thread = threading.Thread(target=run_job)
    thread.start()
    deadline = time.monotonic() + 120
    while not target.received[-1:] or not target.received[-1].startswith("vectors-"):
        assert time.monotonic() < deadline, "no shard was uploaded"
        time.sleep(0.05)
    received = len(target.received)
    sent = time.monotonic()
    server.post("/predictions/bulk-cancel-test/cancel", b"")
    thread.join(60)
    stopped = time.monotonic() - sent
    assert answer.get("dropped") or answer["body"]["status"] == "canceled", answer
    assert not thread.is_alive()
    print(f"cancel: the job stopped {stopped:.2f} s after the cancel was sent")
    assert stopped < 5
    time.sleep(1)
    assert set(job_folders(root)) <= set(folders)
    assert MANIFEST not in target.received[received:]  # the job never finished (shards yielded before stay uploaded)
    assert server.wait_until(("READY",), timeout=30) == "READY"  # the worker is free for the next job
