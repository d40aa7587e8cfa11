"""docs/nginx-cog.conf as written, in front of the real Cog server: each attack it is there for, and a valid
request through it. Needs nginx (Debian: `apt-get install nginx-light`).

    python -m benchmarks.proxy_check

The config is used unchanged except for the two ports (the test server's and a free one to listen on). It
prints one line per check: a 2 MB body of failing items (413 from nginx, the server's memory unchanged); a
0.9 MB valid body (answered); a body that stalls and headers that never end (408 or closed, within the
config's 30 s); an idle connection (closed); `/shutdown` (404). Takes about 40 s.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchmarks.bulk_run import child_pids, peaks_during
from benchmarks.cog_body_cost import bomb, valid
from testkit.cog_server import CogServer
from testkit.process import ROOT, free_port
from testkit.synthetic_checkpoint import write_checkpoint

CONFIG = ROOT / "docs" / "nginx-cog.conf"


def nginx_config(folder: Path, upstream: int, listen: int) -> Path:
    site = CONFIG.read_text().replace("127.0.0.1:5000", f"127.0.0.1:{upstream}").replace("listen 8080", f"listen 127.0.0.1:{listen}")
    (folder / "site.conf").write_text(site)
    main = folder / "nginx.conf"
    main.write_text(f"pid {folder}/nginx.pid;\nerror_log {folder}/error.log;\nevents {{}}\n"
                    f"http {{\n  access_log off;\n  client_body_temp_path {folder}/body;\n  proxy_temp_path {folder}/proxy;\n"
                    f"  include {folder}/site.conf;\n}}\n")
    return main


def post(url: str, body: bytes, timeout: float = 300) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read().decode()[:200]
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")[:200]


def stalled(port: int, payload: bytes, wait_s: float = 45) -> str:
    """Send `payload`, then nothing: what comes back (a status line) or that the connection was closed, and when."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(payload)
        sock.settimeout(wait_s)
        try:
            data = sock.recv(200)
        except socket.timeout:
            return f"still open after {wait_s:.0f} s"
    first = data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed"
    return f"{first or 'closed'} after {time.monotonic() - start:.0f} s"


def main() -> int:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        print("nginx is not installed (Debian: apt-get install nginx-light)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)  # nginx's workers (another user when started as root) write bodies under it
        weights = write_checkpoint(folder / "checkpoint")
        with CogServer(weights, env={"MALLOC_ARENA_MAX": "2"}) as server:
            server.wait_until()
            listen = free_port()
            proxy = subprocess.Popen([nginx, "-c", str(nginx_config(folder, server.port, listen)), "-g", "daemon off;"])
            try:
                time.sleep(1)
                url = f"http://127.0.0.1:{listen}"
                processes = {"server": server.proc.pid, "worker": child_pids(server.proc.pid)[0]}
                (status, text), before, peaks, _ = peaks_during(processes, lambda: post(url + "/predictions", bomb(2.0)))
                rise = sum(peaks[name] - before[name] for name in peaks)
                said = " ".join(re.sub(r"<[^>]+>", " ", text).split())[:40]
                print(f"2 MB body of failing items: HTTP {status} ({said}), server + worker peak rise {rise:.0f} MB",
                      flush=True)
                body = valid(0.9)
                status, text = post(url + "/predictions", body)
                print(f"{len(body) / 1e6:.2f} MB valid body: HTTP {status}, {text[:70]}", flush=True)
                results = {}
                checks = {
                    "a body that stalls": b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                          b"Content-Length: 1000\r\n\r\n{\"input\":",
                    "headers that never end": b"POST /predictions HTTP/1.1\r\nHost: x\r\n",
                    "an idle connection": b"",
                }
                threads = [threading.Thread(target=lambda k=k, p=p: results.__setitem__(k, stalled(listen, p)))
                           for k, p in checks.items()]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                for name in checks:
                    print(f"{name}: {results[name]}", flush=True)
                status, _ = post(url + "/shutdown", b"")
                print(f"POST /shutdown: HTTP {status}; the server is {server.status()}", flush=True)
            finally:
                proxy.terminate()
                proxy.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
