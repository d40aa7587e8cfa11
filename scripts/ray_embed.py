"""Bulk embedding on Ray Data: files of texts in, Parquet of vectors out, one engine per actor.

    python scripts/ray_embed.py corpus/ --output vectors/ --input-type document          # a local Ray
    ray job submit --working-dir . -- python scripts/ray_embed.py s3://bucket/corpus/ \\
        --output s3://bucket/vectors/ --weights /mnt/e5 --actors 8 --gpus-per-actor 1      # a cluster

Inputs: files or folders of .parquet, .jsonl (an object per line), .csv (with a header) or .txt (a text per
line), optionally compressed (.gz, .zst, ...), on a local disk or anything pyarrow's filesystems read
(s3://, gs://, hdfs://). Every row is embedded as predict() embeds an item of `texts` with the same options:
same presets, instruction, truncation, normalization, checks and messages (e5/batch_job.py). The output is
Parquet files in --output: the input's --id-column (or `file` and `row`, the row's index in its file from 0),
`embedding` (float32 x 1024), `token_count` and `truncated`. Rows keep their input order, file by file, in
the output's file names' order. A bad record fails the job and is named as `path[row]`.

--weights is a folder that every node can read (the same path on each); see docs/scaling.md for ways to ship
it. Each actor loads it once and takes --cpus-per-actor CPUs and --gpus-per-actor GPUs from Ray (default: 1
GPU if the cluster has any, else none).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.dataset as pads  # noqa: E402
import pyarrow.fs as pafs  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import ray.data  # noqa: E402
from ray.data.datasource import FileBasedDatasource  # noqa: E402

from e5.batch_job import FILE_COLUMN, OUTPUT_COLUMNS, ROW_COLUMN, EmbedBatch  # noqa: E402
from e5.errors import E5Error, InputError  # noqa: E402
from e5.instructions import DEFAULT_TASK, INPUT_TYPES  # noqa: E402
from e5.model import identify_checkpoint  # noqa: E402
from e5.validation import Limits, Options  # noqa: E402

FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".csv": "csv", ".txt": "txt"}
READ_ROWS = 4096  # rows per table a reader yields
READ_BYTES = 1 << 20  # bytes per read of a line-based file
DEFAULT_WEIGHTS_DIR = ROOT / "weights"
# What a folder listing keeps: the formats, also compressed (the suffixes pyarrow's Codec.detect knows).
EXTENSIONS = [s.lstrip(".") + c for s in FORMATS for c in ("", ".gz", ".bz2", ".zst", ".lz4", ".br")]


def file_format(path: str) -> str:
    """The format from the name, past a compression suffix that pyarrow recognises (part-0.jsonl.gz: jsonl)."""
    name = path.lower()
    try:
        pa.Codec.detect(name)
        name = name.rsplit(".", 1)[0]
    except (TypeError, ValueError):  # no compression suffix
        pass
    for suffix, fmt in FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise InputError(f"{path}: a file's name must end in {', '.join(FORMATS)} (then maybe .gz, .zst, ...)", "bad_file")


def lines(f, path: str) -> Iterator[tuple[int, str]]:
    """(line number from 1, line) of a UTF-8 stream, read a megabyte at a time; no line ending kept."""
    rest, number = b"", 0
    while chunk := f.read(READ_BYTES):
        *complete, rest = (rest + chunk).split(b"\n")
        for raw in complete:
            number += 1
            yield number, decoded(raw, path, number)
    if rest:  # a last line without a line break
        yield number + 1, decoded(rest, path, number + 1)


def decoded(raw: bytes, path: str, number: int) -> str:
    try:
        return raw.rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path} line {number} is not UTF-8 text (byte {err.start})", "bad_file") from None


def read_txt(f, path: str, text_column: str, id_column: str | None) -> Iterator[pa.Table]:
    if id_column:
        raise InputError(f"{path}: a .txt file holds only texts, no `{id_column}` column", "bad_file")
    texts: list[str] = []
    for _, line in lines(f, path):
        texts.append(line)
        if len(texts) == READ_ROWS:
            yield pa.table({text_column: texts})
            texts = []
    if texts:
        yield pa.table({text_column: texts})


def read_jsonl(f, path: str, text_column: str, id_column: str | None) -> Iterator[pa.Table]:
    """An object per line; blank lines are skipped (so rows count records, not lines), as `texts_file` does."""
    columns = [c for c in (text_column, id_column) if c]
    values: dict[str, list] = {c: [] for c in columns}
    for number, line in lines(f, path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise InputError(f"{path} line {number} is not valid JSON: {err.msg}", "bad_file") from None
        for c in columns:
            if not isinstance(record, dict) or c not in record:
                raise InputError(f"{path} line {number} needs an object with a `{c}` field", "bad_file")
        text = record[text_column]
        # The column must be strings; a null stays (the batch function names it), any other type is refused
        # here with the batch function's own words.
        if text is not None and not isinstance(text, str):
            raise InputError(f"`{path}[{len(values[text_column])}]` must be a string, got {type(text).__name__}",
                             "invalid_type")
        for c in columns:
            values[c].append(record[c])
        if len(values[text_column]) % READ_ROWS == 0:
            yield table_of(values, text_column)
    yield table_of(values, text_column)


def table_of(values: dict[str, list], text_column: str) -> pa.Table:
    """The rows gathered since the last table, which are then dropped from `values`."""
    table = pa.table({c: pa.array(v, pa.string()) if c == text_column else pa.array(v) for c, v in values.items()})
    for v in values.values():
        v.clear()
    return table


def read_csv(f, path: str, text_column: str, id_column: str | None) -> Iterator[pa.Table]:
    """Read as strings: a CSV has no types, and a numeric-looking text must stay text. Quoted line breaks allowed."""
    columns = [c for c in (text_column, id_column) if c]
    try:
        reader = pacsv.open_csv(
            f,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                                 strings_can_be_null=False),
        )
    except pa.ArrowInvalid as err:
        if str(err).startswith("Empty CSV file"):  # 0 bytes, not even a header: a file with no rows
            return
        raise InputError(f"{path} is not valid CSV: {err}", "bad_file") from None
    missing = [c for c in columns if c not in reader.schema.names]
    if missing:
        raise InputError(f"{path} has no `{missing[0]}` column; it has {', '.join(reader.schema.names)}", "bad_file")
    rows = 0
    while True:
        try:
            record_batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as err:
            raise InputError(f"{path} is not valid CSV after row {rows}: {err}", "bad_file") from None
        rows += record_batch.num_rows
        yield pa.Table.from_batches([record_batch]).select(columns)


def read_parquet(f, path: str, text_column: str, id_column: str | None) -> Iterator[pa.Table]:
    parquet = pq.ParquetFile(f)
    columns = [c for c in (text_column, id_column) if c]
    names = parquet.schema_arrow.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise InputError(f"{path} has no `{missing[0]}` column; it has {', '.join(names)}", "bad_file")
    for record_batch in parquet.iter_batches(batch_size=READ_ROWS, columns=columns):
        yield pa.Table.from_batches([record_batch])


READERS = {"parquet": read_parquet, "jsonl": read_jsonl, "csv": read_csv, "txt": read_txt}


class TextFiles(FileBasedDatasource):
    """Ray Data reads each file in one task, so each row's index in its file is known: the `row` column.

    Ray's own readers give the file (include_paths) but not the row, which errors and outputs need.
    """

    def __init__(self, paths, text_column: str = "text", id_column: str | None = None, **kwargs):
        super().__init__(paths, file_extensions=EXTENSIONS, **kwargs)
        self.text_column, self.id_column = text_column, id_column

    def _open_input_source(self, filesystem, path: str, **open_args):
        if file_format(path) == "parquet":  # its footer comes first: random access, not a stream
            return filesystem.open_input_file(path)
        return super()._open_input_source(filesystem, path, **open_args)

    def _read_stream(self, f, path: str) -> Iterator[pa.Table]:
        first = 0
        for table in READERS[file_format(path)](f, path, self.text_column, self.id_column):
            n = table.num_rows
            if n == 0:
                continue
            table = table.append_column(FILE_COLUMN, pa.array([path] * n, pa.string()))
            yield table.append_column(ROW_COLUMN, pa.array(range(first, first + n), pa.int64()))
            first += n


def task_error(err: BaseException) -> E5Error | None:
    """The e5 error that a read task or the batch function raised, as Ray hands it to the driver.

    Ray re-raises a task's exception as RayTaskError(InputError), a subclass of both whose message is the whole
    remote traceback; the task's own exception is its `cause`. (Ray Data would wrap the batch function's error
    in a UserCodeException that keeps only the traceback's text, hence raise_original_map_exception in main.)
    An actor that fails as it starts (a checkpoint of the wrong width) reaches the driver wrapped once more, so
    the chain is followed: `cause` first, then the exceptions each was raised from.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        cause = getattr(err, "cause", None)
        if isinstance(cause, BaseException) and cause is not err:
            err = cause
        elif isinstance(err, E5Error):
            return err
        else:
            err = err.__cause__ or err.__context__
    return None


def check_weights(weights: str) -> None:
    """Refuse a missing, incomplete or unknown checkpoint before any actor starts, where the driver can tell.

    On a local Ray (one node) the driver sees what the actors will; on a cluster the folder may exist on the
    workers only, and an actor that finds none fails as it starts. An actor's failure reaches the driver as
    Ray's traceback, not as the engine's error, so whatever can be checked here is.
    """
    if Path(weights).exists() or len(ray.nodes()) == 1:
        identify_checkpoint(weights)


def default_gpus() -> float:
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def build(args) -> "ray.data.Dataset":
    options = Options(task=args.task, input_type=args.input_type, normalize=args.normalize, truncate=args.truncate,
                      long_texts=args.long_texts)
    source = TextFiles(args.inputs, text_column=args.text_column, id_column=args.id_column)
    gpus = default_gpus() if args.gpus_per_actor is None else args.gpus_per_actor
    ds = ray.data.read_datasource(source).map_batches(
        EmbedBatch,
        fn_constructor_kwargs=dict(
            weights_dir=str(args.weights), options=options, text_column=args.text_column,
            limits=Limits.from_env(), threads=args.threads_per_actor,
        ),
        batch_format="pyarrow",
        batch_size=args.rows_per_batch,
        compute=ray.data.ActorPoolStrategy(size=args.actors),
        num_cpus=args.cpus_per_actor,
        num_gpus=gpus,
    )
    keep = [args.id_column] if args.id_column else [FILE_COLUMN, ROW_COLUMN]
    return ds.select_columns(keep + list(OUTPUT_COLUMNS))


def filesystem(output: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(output)
    except pa.ArrowInvalid:  # a relative local path
        return pafs.LocalFileSystem(), os.path.abspath(output)


def output_exists(output: str) -> bool:
    fs, path = filesystem(output)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def remove_output(output: str) -> None:
    """What a failed job wrote: a folder it created, empty or partly written, would refuse the rerun."""
    fs, path = filesystem(output)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def rows_written(output: str) -> int:
    try:
        return pads.dataset(output, format="parquet").count_rows()
    except (FileNotFoundError, pa.ArrowInvalid):  # nothing was written: Ray creates no folder for no rows
        return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="files or folders (local paths or URIs such as s3://bucket/corpus/)")
    parser.add_argument("--output", required=True, help="folder for the Parquet output (local path or URI)")
    parser.add_argument("--text-column", default="text", help="the column (or JSON field) holding the texts")
    parser.add_argument("--id-column", help="a column to carry into the output (default: `file` and `row` instead)")
    parser.add_argument("--input-type", default="query", choices=INPUT_TYPES)
    parser.add_argument("--task", default=DEFAULT_TASK, help="a preset name or an instruction (for queries)")
    parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--long-texts", choices=["truncate", "mean"], default="truncate",
                        help="a text past 512 tokens: its first 512 (truncate), or the mean of windows over all "
                             "of it (mean); docs/long-texts.md")
    parser.add_argument("--truncate", action=argparse.BooleanOptionalAction, default=True,
                        help="cut texts past 512 tokens (--no-truncate: such a text fails the job)")
    parser.add_argument("--rows-per-batch", type=int, default=4096, help="rows per call of the batch function")
    parser.add_argument("--actors", type=int, default=1, help="engines, each loading the weights once")
    parser.add_argument("--gpus-per-actor", type=float, help="default: 1 if the cluster has GPUs, else 0")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs Ray reserves for each actor")
    parser.add_argument("--threads-per-actor", type=int,
                        help="torch threads per actor (default: Ray's, the actor's whole CPUs, at least 1)")
    parser.add_argument("--weights", default=os.environ.get("E5_WEIGHTS_DIR") or str(DEFAULT_WEIGHTS_DIR),
                        help="checkpoint folder, the same path on every node (default: $E5_WEIGHTS_DIR or weights/)")
    parser.add_argument("--overwrite", action="store_true", help="replace what --output holds (default: refuse)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if output_exists(args.output) and not args.overwrite:
        print(f"ray_embed: {args.output} exists: name a new --output, or add --overwrite to replace it", file=sys.stderr)
        return 1
    if not ray.is_initialized():
        ray.init()  # the cluster of `ray job submit` (RAY_ADDRESS), else a local one
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.raise_original_map_exception = True  # see task_error
    started = time.perf_counter()
    created = not output_exists(args.output)  # only what this run created is removed if it fails
    try:
        check_weights(args.weights)
        build(args).write_parquet(args.output, mode="overwrite" if args.overwrite else "error")
    except Exception as err:
        if created:
            remove_output(args.output)
        error = task_error(err)
        if error is None:
            raise
        print(f"ray_embed: {error}", file=sys.stderr)  # the record's own message, not Ray's traceback
        return 1
    seconds = time.perf_counter() - started
    n = rows_written(args.output)
    if n == 0:
        if created:
            remove_output(args.output)
        print(f"ray_embed: the inputs hold no texts ({', '.join(args.inputs)}); nothing was written", file=sys.stderr)
        return 1
    # Three significant figures: a small job spends seconds starting Ray, and "0 texts/s" would say nothing.
    print(f"ray_embed: {n} texts -> {args.output} in {seconds:.1f}s ({n / seconds:.3g} texts/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
