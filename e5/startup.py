"""What every face does at start, and the OpenAI-compatible face's own settings.

`load_service` is the Cog predictor's `setup()` as a function: the same weights folder, the same `E5_*`
settings, the same refusals (a missing or broken weights folder raises `WeightsError` naming the folder and
the command that fills it; a bad setting raises ValueError naming the variable). The OpenAI-compatible face
(openai_api.py) starts through it, so both faces serve the same engine the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .batcher import max_wait_from_env
from .engine import Embedder
from .model import runtime_report
from .service import EmbeddingService
from .settings import env_number
from .validation import Limits

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"  # beside predict.py, as in the image


def load_service(environ: Mapping[str, str] | None = None) -> EmbeddingService:
    """Settings checked, weights loaded and warmed up: the engine ready for requests, and one log line."""
    env = os.environ if environ is None else environ
    start = time.perf_counter()
    weights_dir = env.get("E5_WEIGHTS_DIR") or str(DEFAULT_WEIGHTS_DIR)
    limits, max_wait_s = Limits.from_env(env), max_wait_from_env(env)  # a bad value stops here, before loading
    embedder = Embedder.load(weights_dir)
    warm = embedder.warm_up()
    p = embedder.profile
    print(
        f"e5: loaded {weights_dir} on {p.device} ({str(p.dtype).removeprefix('torch.')}), "
        f"token budget {p.token_budget}, limit {embedder.max_tokens} tokens; {runtime_report(p.device)}; "
        f"warm-up {warm:.2f}s, setup {time.perf_counter() - start:.2f}s",
        flush=True,
    )
    return EmbeddingService(embedder, limits, max_wait_s)


@dataclass(frozen=True)
class ApiSettings:
    """The OpenAI-compatible server's own limits (each set by the variable in its comment)."""

    api_key: str | None = None  # E5_API_KEY: a bearer token every /v1 and /rerank call must carry; unset: open
    # E5_API_MAX_BODY_BYTES: a request body past this is refused (413) before it is parsed. The default lets the
    # largest request the limits allow through (4,000,000 characters, JSON-escaped at up to 6 bytes each).
    max_body_bytes: int = 32_000_000
    # E5_API_MAX_REQUESTS: embedding and rerank requests in flight at once; one more is answered 429. The same 32
    # as the Cog face's slots: enough for the batcher to fill forwards, few enough that a flood queues at clients.
    max_requests: int = 32

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ApiSettings":
        env = os.environ if environ is None else environ
        body, requests = env_number(env, "E5_API_MAX_BODY_BYTES"), env_number(env, "E5_API_MAX_REQUESTS")
        return cls(
            api_key=env.get("E5_API_KEY", "").strip() or None,
            max_body_bytes=cls.max_body_bytes if body is None else body,
            max_requests=cls.max_requests if requests is None else requests,
        )
