"""A cancel sent right after an async prediction's 202, once or repeated: how the prediction ends, and when.

    python -m benchmarks.cancel_race                 # 4 tries each way, 3,000 texts a request
    python -m benchmarks.cancel_race --tries 10

Against the real Cog server (coglet) on a generated test checkpoint, with a local webhook receiver for the
final state. "once": one cancel right after the 202. "repeated": the same, then the cancel again every 0.5 s
until the webhook reports the end. coglet 0.23.1 drops a cancel that reaches its worker before predict() has
started (docs/reliability.md, "Security"), so "once" can run to the end; the repeated cancel lands once
predict() runs.
"""

from __future__ import annotations

import argparse
import http.server
import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from testkit.cog_server import CogServer
from testkit.synthetic_checkpoint import write_checkpoint

ENDED = ("succeeded", "failed", "canceled")


class Webhook(http.server.BaseHTTPRequestHandler):
    """Records each prediction's final state, as Replicate's webhook receiver would."""

    final: dict[str, tuple[str, str]] = {}

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("status") in ENDED:
            Webhook.final[body["id"]] = (body["status"], (body.get("error") or "")[:120])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def call(url: str, method: str = "POST", body: dict | None = None, headers: dict | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


def cancel_race(server: CogServer, hook: str, inputs: dict, repeat: bool, limit_s: float = 120.0) -> dict:
    """One async prediction cancelled right after its 202 (and again every 0.5 s if `repeat`): how it ended."""
    pid = f"race-{time.time_ns()}"
    start = time.monotonic()
    accepted = call(f"{server.url}/predictions/{pid}", "PUT", {"input": inputs, "webhook": hook,
                    "webhook_events_filter": ["completed"]}, {"Prefer": "respond-async"})
    cancels = [call(f"{server.url}/predictions/{pid}/cancel")]
    last = time.monotonic()
    while pid not in Webhook.final and time.monotonic() - start < limit_s:
        if repeat and time.monotonic() - last >= 0.5:
            cancels.append(call(f"{server.url}/predictions/{pid}/cancel"))
            last = time.monotonic()
        time.sleep(0.05)
    status, error = Webhook.final.get(pid, ("still running", ""))
    return {"accepted": accepted, "cancels": len(cancels), "status": status, "error": error,
            "seconds": round(time.monotonic() - start, 1)}


def webhook_receiver() -> tuple[http.server.ThreadingHTTPServer, str]:
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    return receiver, f"http://127.0.0.1:{receiver.server_address[1]}/hook"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=4)
    parser.add_argument("--texts", type=int, default=3000)
    args = parser.parse_args()
    inputs = {"texts": [f"query {i} about protein and pumpkins" for i in range(args.texts)]}
    receiver, hook = webhook_receiver()
    with tempfile.TemporaryDirectory() as tmp, CogServer(write_checkpoint(Path(tmp) / "checkpoint")) as server:
        server.wait_until()
        server.predict({"texts": ["warm up"]})
        for repeat in (False, True):
            for _ in range(args.tries):
                result = cancel_race(server, hook, inputs, repeat)
                print(f"{'repeated' if repeat else 'once':8} {result}", flush=True)
                while server.status() == "BUSY":  # the next try starts on an idle server
                    time.sleep(0.2)
    receiver.shutdown()


if __name__ == "__main__":
    main()
