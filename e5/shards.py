"""A bulk job's vectors as shard files and a manifest: what the bulk model (predict_bulk.py) returns.

Cog's server uploads each file the predictor yields to `--upload-url` (Replicate's file store) as it is
yielded, with 25 s per upload (coglet 0.23.1). A shard holds at most SHARD_BYTES of vectors: at a modest
10 MB/s upload that is ~5 s, a fifth of the limit; at 2 MB/s it still fits. Each shard's name carries its
first row (`vectors-000012000.npy`), and the manifest lists the shards in row order with their row ranges, the
model, the dimensions, the token total and the rows that were truncated, so a user rebuilds the N x D array in
input order whatever order the upload URLs come back in (coglet lists them as their uploads finish):

    manifest = json.load(open("manifest.json"))
    vectors = np.concatenate([np.load(s["file"]) for s in manifest["shards"]])   # .npy shards
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bulk import VectorWriter
from .memory_model import JSONL_ROW_BYTES
from .settings import env_number

SHARD_BYTES = 48 * 1024 * 1024  # of float32 vectors: 12,288 rows of 1,024 as .npy (E5_BULK_SHARD_MB sets it)
MANIFEST = "manifest.json"


def shard_bytes_from_env(environ: Mapping[str, str] | None = None) -> int:
    """E5_BULK_SHARD_MB (MiB) as bytes: smaller shards for a slow link to the file store."""
    megabytes = env_number(os.environ if environ is None else environ, "E5_BULK_SHARD_MB", float, minimum=0.01)
    return SHARD_BYTES if megabytes is None else int(megabytes * 1024 * 1024)


def rows_per_shard(output_format: str, dimensions: int, shard_bytes: int = SHARD_BYTES) -> int:
    row = dimensions * (4 if output_format == "npy" else JSONL_ROW_BYTES)
    return max(1, shard_bytes // row)


def shard_name(first_row: int, output_format: str) -> str:
    return f"vectors-{first_row:09d}.{output_format}"


@dataclass
class ShardWriter:
    """Vectors in, finished shard files out: `add` returns the shards it completed, `finish` the last one and
    the manifest. Holds one shard's file open at a time, never the vectors."""

    folder: Path
    output_format: str
    total: int  # rows the job will write (the checking pass counted them)
    dimensions: int
    model: str
    rows_per_shard: int
    written: int = 0
    tokens: int = 0
    truncated_rows: list[int] = field(default_factory=list)
    shards: list[dict] = field(default_factory=list)
    _writer: VectorWriter | None = None
    _current: dict | None = None

    def add(self, vectors: np.ndarray, token_counts: list[int], truncated: list[bool]) -> list[Path]:
        """Append vectors in input order; the paths of the shards this completed."""
        self.tokens += sum(token_counts)
        self.truncated_rows += [self.written + i for i, cut in enumerate(truncated) if cut]
        done = []
        start = 0
        while start < len(vectors):
            if self._writer is None:
                self._open()
            room = self._current["rows"] - self._writer.written
            piece = vectors[start:start + room]
            self._writer.write(piece)
            start += len(piece)
            self.written += len(piece)
            if self._writer.written == self._current["rows"]:
                done.append(self._close())
        return done

    def finish(self) -> Path:
        """The manifest, once every row is written (a shard still open means rows went missing)."""
        if self.written != self.total or self._writer is not None:
            raise RuntimeError(f"{self.written} of {self.total} rows written")
        path = self.folder / MANIFEST
        path.write_text(json.dumps(self.manifest(), indent=1) + "\n", encoding="utf-8")
        return path

    def manifest(self) -> dict:
        return {
            "model": self.model,
            "dimensions": self.dimensions,
            "rows": self.total,
            "format": self.output_format,
            "dtype": "float32",
            "shards": self.shards,
            "tokens": self.tokens,
            "truncated_rows": self.truncated_rows,
        }

    def _open(self) -> None:
        rows = min(self.rows_per_shard, self.total - self.written)
        self._current = {"file": shard_name(self.written, self.output_format), "first_row": self.written,
                         "rows": rows}
        self._writer = VectorWriter(self.folder / self._current["file"], self.output_format, rows, self.dimensions,
                                    first_index=self.written)

    def _close(self) -> Path:
        self._writer.close()
        self._writer = None
        self.shards.append(self._current)
        return self.folder / self._current["file"]

    def close(self) -> None:
        """Close a shard left open (a failed or cancelled job); its folder is removed by the caller."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def load_vectors(manifest_path: Path) -> np.ndarray:
    """The whole array in input order from a manifest and the shards beside it (what the README shows)."""
    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    folder = Path(manifest_path).parent
    if manifest["format"] == "npy":
        return np.concatenate([np.load(folder / s["file"]) for s in manifest["shards"]])
    rows = []
    for shard in manifest["shards"]:
        with open(folder / shard["file"], encoding="utf-8") as f:
            rows += [json.loads(line)["embedding"] for line in f]
    return np.asarray(rows, dtype=np.float32)
