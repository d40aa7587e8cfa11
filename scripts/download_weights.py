"""Fetch intfloat/multilingual-e5-large-instruct into weights/, at a pinned revision, verified.

    python scripts/download_weights.py [--dest weights] [--force]

Only what inference needs: config.json, model.safetensors (never the pickle .bin) and the tokenizer files.
Each file is downloaded into a staging folder, checked against the size and hash that the pinned revision's
metadata gives (sha256 for large files, git's blob sha1 for small ones), and only then moved into place. A
manifest records what was verified, so a second run with everything present does nothing and needs no network;
its `repo_id` also tells the engine which model the folder holds (e5/profiles.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

REPO_ID = "intfloat/multilingual-e5-large-instruct"
# The commit the MTEB results for this model were produced from; a pinned revision makes every hash stable.
REVISION = "baa7be480a7de1539afce709c8f13f833a510e0a"
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
MANIFEST = ".e5-manifest.json"  # e5/profiles.py reads its `repo_id`: keep the name and the field
DEFAULT_DEST = Path(__file__).resolve().parent.parent / "weights"


class DownloadError(RuntimeError):
    pass


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The id git gives a file's content: sha1 of b'blob <size>\\0' + content."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def verify(path: Path, size: int | None, sha256: str | None = None, blob_id: str | None = None) -> None:
    """Raise DownloadError unless the file has the expected size and hash (whichever are known)."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DownloadError(f"{path.name}: {actual} bytes, expected {size}; the download is incomplete or altered")
    if sha256 is not None and sha256_of(path) != sha256:
        raise DownloadError(f"{path.name}: sha256 does not match revision {REVISION}; the file is corrupt or altered")
    if sha256 is None and blob_id is not None and git_blob_sha1(path) != blob_id:
        raise DownloadError(f"{path.name}: git blob id does not match revision {REVISION}; the file is corrupt or altered")


def already_present(dest: Path) -> bool:
    """True when a previous run verified every file of this revision and the sizes still agree."""
    try:
        manifest = json.loads((dest / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("revision") != REVISION:
        return False
    files = manifest.get("files", {})
    return all(name in files and (dest / name).is_file() and (dest / name).stat().st_size == files[name]["size"] for name in FILES)


def remote_metadata() -> dict[str, dict]:
    """Size and hash of each file at the pinned revision, from the hub's API."""
    from huggingface_hub import HfApi

    try:
        infos = HfApi().get_paths_info(REPO_ID, list(FILES), revision=REVISION)
    except Exception as err:
        raise DownloadError(
            f"cannot reach the Hugging Face hub for {REPO_ID}@{REVISION[:8]} ({type(err).__name__}: {err}). "
            "This machine may be offline: run this script where the hub is reachable and copy weights/ here, "
            "or set HF_ENDPOINT to a mirror."
        ) from err
    meta = {}
    for info in infos:
        lfs = getattr(info, "lfs", None)
        meta[info.path] = {
            "size": info.size,
            "sha256": lfs.sha256 if lfs else None,
            "blob_id": getattr(info, "blob_id", None),
        }
    missing = [f for f in FILES if f not in meta]
    if missing:
        raise DownloadError(f"{REPO_ID}@{REVISION[:8]} has no {', '.join(missing)}")
    return meta


def download(dest: Path, force: bool = False) -> None:
    if not force and already_present(dest):
        print(f"{dest}: {REPO_ID}@{REVISION[:8]} already present and verified; nothing to do")
        return
    from huggingface_hub import hf_hub_download

    meta = remote_metadata()
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    start = time.perf_counter()
    try:
        for name in FILES:
            print(f"downloading {name} ({meta[name]['size'] / 1e6:.1f} MB)", flush=True)
            try:
                path = Path(hf_hub_download(REPO_ID, name, revision=REVISION, local_dir=staging))
            except Exception as err:
                raise DownloadError(f"downloading {name} failed ({type(err).__name__}: {err})") from err
            verify(path, **meta[name])
        for name in FILES:  # everything verified: only now replace what weights/ held
            shutil.move(str(staging / name), dest / name)
        manifest = {"repo_id": REPO_ID, "revision": REVISION, "files": meta}
        (dest / MANIFEST).write_text(json.dumps(manifest, indent=2))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"{dest}: {REPO_ID}@{REVISION[:8]} downloaded and verified in {time.perf_counter() - start:.1f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="target folder (default: weights/)")
    parser.add_argument("--force", action="store_true", help="download again even when present")
    args = parser.parse_args(argv)
    try:
        download(args.dest, force=args.force)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
