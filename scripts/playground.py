"""Serve Cog's own web form (the `cog playground` UI) against this model's server, without Go or the cog CLI.

    python scripts/playground.py --assets ~/src/cog/pkg/cli/playground --target http://127.0.0.1:5000
    # then open http://127.0.0.1:8000 in a browser on the same machine

`cog playground` is a small Go server (replicate/cog pkg/cli/playground.go) around prebuilt assets
(pkg/cli/playground/ in a checkout of replicate/cog): it serves them, answers `/config` with the model's URL,
and forwards `/proxy/*` to the model's API with the URL the page names in its `X-Cog-Target` header. This is
those three routes in Python, serving the same assets unchanged, so the page, its form and its output view
are Cog's. Webhooks (the page's async mode) are not relayed: runs are synchronous. It listens on 127.0.0.1
only and forwards only to the target it was started with.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COG_VERSION = "0.23.1"
FORWARDED = ("Content-Type", "Prefer", "Accept")  # the request headers the page's API calls depend on


def handler(assets: Path, target: str) -> type[BaseHTTPRequestHandler]:
    root = assets.resolve()

    class Playground(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's names)
            if self.path == "/config":
                return self._send(200, json.dumps({"target": target, "webhookBase": "", "cogVersion": COG_VERSION}).encode(),
                                  "application/json")
            if self.path.startswith("/proxy/"):
                return self._forward()
            name = self.path.split("?", 1)[0].lstrip("/") or "index.html"
            path = (root / name).resolve()
            if root not in path.parents or not path.is_file():
                return self._send(404, b"not found", "text/plain")
            kind = "text/javascript" if path.suffix == ".js" else mimetypes.guess_type(path.name)[0]
            self._send(200, path.read_bytes(), kind or "application/octet-stream")

        def do_POST(self):  # noqa: N802
            self._forward()

        def do_PUT(self):  # noqa: N802
            self._forward()

        def _forward(self):
            if not self.path.startswith("/proxy/") or self.headers.get("X-Cog-Target", target).rstrip("/") != target:
                return self._send(403, b"this stand-in forwards only to its own target", "text/plain")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
            headers = {name: self.headers[name] for name in FORWARDED if self.headers.get(name)}
            request = urllib.request.Request(target + self.path[len("/proxy"):], data=body, headers=headers,
                                             method=self.command)
            try:
                with urllib.request.urlopen(request, timeout=600) as response:
                    status, kind, data = response.status, response.headers.get("Content-Type"), response.read()
            except urllib.error.HTTPError as err:
                status, kind, data = err.code, err.headers.get("Content-Type"), err.read()
            self._send(status, data, kind or "application/json")

        def _send(self, status: int, data: bytes, kind: str):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # quiet: the model server logs the predictions
            pass

    return Playground


def serve(assets: Path, target: str, port: int = 8000) -> ThreadingHTTPServer:
    """The stand-in, bound to 127.0.0.1:port and not yet serving (call serve_forever)."""
    if not (assets / "index.html").is_file():
        raise SystemExit(f"{assets} has no index.html: give the folder pkg/cli/playground of a replicate/cog checkout")
    return ThreadingHTTPServer(("127.0.0.1", port), handler(assets, target.rstrip("/")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=Path, required=True, help="pkg/cli/playground of a replicate/cog checkout")
    parser.add_argument("--target", default="http://127.0.0.1:5000", help="the model's server (scripts/serve.sh)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    server = serve(args.assets, args.target, args.port)
    print(f"Cog's playground for {args.target} on http://127.0.0.1:{args.port}")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
