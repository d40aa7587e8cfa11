"""`GET /metrics` of the OpenAI-compatible server, in Prometheus' text format (prometheus_client's exposition).

What an operator graphs and alerts on: requests by route and status, texts and tokens embedded, refusals by
their code, request latency and queue wait, forwards and their sizes, requests in flight and the memory
budget. Each app has its own registry, so two apps in one process (tests) never share a count.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from e5.memory_model import MB  # the budget's megabytes are 10^6 bytes

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
FORWARD_TEXTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FORWARD_TOKENS = (64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class ApiMetrics:
    def __init__(self, in_flight: Callable[[], int], memory: Callable[[], dict | None]):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("e5_requests", "HTTP requests answered, by route and status.",
                                ["route", "status"], registry=registry)
        self.texts = Counter("e5_texts", "Texts embedded (queries and documents).", registry=registry)
        self.tokens = Counter("e5_tokens", "Tokens embedded, markers included (what `usage` counts).",
                              registry=registry)
        self.refusals = Counter("e5_refusals", "Requests refused or failed, by the error's code.", ["code"],
                                registry=registry)
        self.latency = Histogram("e5_request_seconds", "Time from a request's head to its answer, by route.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=registry)
        self.queue_wait = Histogram("e5_queue_wait_seconds", "Time a request's texts waited for their first "
                                    "forward, behind other requests' work.", buckets=LATENCY_BUCKETS,
                                    registry=registry)
        self.memory_wait = Histogram("e5_memory_wait_seconds", "Time a request waited for room in the memory "
                                     "budget.", buckets=LATENCY_BUCKETS, registry=registry)
        self.forwards = Counter("e5_forwards", "Forward passes of the model.", registry=registry)
        self.forward_texts = Histogram("e5_forward_texts", "Texts in each forward.", buckets=FORWARD_TEXTS,
                                       registry=registry)
        self.forward_tokens = Histogram("e5_forward_tokens", "Tokens in each forward, padding left out.",
                                        buckets=FORWARD_TOKENS, registry=registry)
        self.forward_seconds = Histogram("e5_forward_seconds", "Time of each forward, to the vectors on the host.",
                                         buckets=LATENCY_BUCKETS, registry=registry)
        Gauge("e5_requests_in_flight", "Embedding, rerank and tokenize requests being served.",
              registry=registry).set_function(in_flight)
        budget = Gauge("e5_memory_budget_bytes", "The container's memory budget (0 until the model has loaded).",
                       registry=registry)
        budget.set_function(lambda: ((memory() or {}).get("budget_mb") or 0) * MB)
        Gauge("e5_memory_in_use_bytes", "Memory reserved now by requests running or being sent.",
              registry=registry).set_function(lambda: (memory() or {}).get("in_use_mb", 0) * MB)

    def forward(self, texts: int, tokens: int, seconds: float) -> None:
        """One forward (called by the batcher on its loop)."""
        self.forwards.inc()
        self.forward_texts.observe(texts)
        self.forward_tokens.observe(tokens)
        self.forward_seconds.observe(seconds)

    def served(self, metrics: dict) -> None:
        """One request's metrics, as the service reports them."""
        self.texts.inc(metrics.get("texts", 0))
        self.tokens.inc(metrics.get("tokens", 0))
        self.queue_wait.observe(metrics.get("seconds.queue_wait", 0.0))
        self.memory_wait.observe(metrics.get("seconds.memory_wait", 0.0))

    def answered(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def refused(self, code: str | None) -> None:
        self.refusals.labels(code or "unknown").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
