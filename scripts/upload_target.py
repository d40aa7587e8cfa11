"""A local upload target for Cog's server: keeps each file it is sent, in a folder of your choice, and serves
it back at the address it answered.

    python scripts/upload_target.py --dir vectors/ --port 5001
    docker run --gpus all -p 5000:5000 --add-host host.docker.internal:host-gateway e5-bulk \
        python -m cog.server.http --upload-url http://host.docker.internal:5001/

Cog's server (coglet) PUTs every file a model returns to `{upload-url}{file name}` and puts the address it
answers (its `Location` header) in the prediction's output, as Replicate's file store does. Run the bulk model
this way on your own machine and its shards and manifest land in `--dir`, instead of coming back inside the
response as base64. The tests start it in a thread (`UploadTarget`).
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")  # a plain file name: no folders, no dot files


class UploadTarget:
    """The server on 127.0.0.1 (or `host`) in a thread: `url` for --upload-url, `received` the names in order."""

    def __init__(self, folder: str | Path, host: str = "127.0.0.1", port: int = 0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.received: list[str] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self):
                name = self.path.lstrip("/").split("?", 1)[0]
                if not NAME.fullmatch(name):
                    self.send_error(400, "a plain file name is expected")
                    return
                length = int(self.headers.get("Content-Length", 0))
                with open(target.folder / name, "wb") as f:
                    while length:
                        chunk = self.rfile.read(min(length, 1 << 20))
                        if not chunk:
                            break
                        f.write(chunk)
                        length -= len(chunk)
                target.received.append(name)
                self.send_response(201)
                self.send_header("Location", f"{target.url}{name}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):  # the addresses it answered serve the files, as a file store's do
                name = self.path.lstrip("/").split("?", 1)[0]
                path = target.folder / name
                if not NAME.fullmatch(name) or not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet: the server logs every upload itself
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/"

    def __enter__(self) -> "UploadTarget":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="where the files go")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args(argv)
    target = UploadTarget(args.dir, args.host, args.port)
    print(f"upload target on {target.url}, files into {args.dir}", flush=True)
    try:
        target.server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
