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
from .budget import BudgetSettings, MemoryBudget
from .engine import Embedder
from .memory_model import MB
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
    BudgetSettings.from_env(env)  # a bad E5_MEMORY_* value stops here too, before loading
    embedder = Embedder.load(weights_dir)
    warm = embedder.warm_up()
    budget = BudgetSettings.from_env(env)  # after warm-up: the memory this process holds at rest is known
    p = embedder.profile
    print(
        f"e5: loaded {embedder.model_profile.name} ({embedder.dimensions}-d) from {weights_dir} on {p.device} ({str(p.dtype).removeprefix('torch.')}), "
        f"token budget {p.token_budget}, limit {embedder.max_tokens} tokens; {runtime_report(p.device)}; "
        f"memory budget {budget.budget_bytes // MB} MB ({budget.source}), wait {budget.wait_s:g}s; "
        f"warm-up {warm:.2f}s, setup {time.perf_counter() - start:.2f}s",
        flush=True,
    )
    return EmbeddingService(embedder, limits, max_wait_s, MemoryBudget.from_settings(budget))


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
    # E5_API_BODY_TIMEOUT_S: a request's body must arrive whole within this many seconds of its headers, or the
    # request is answered 408 and its connection closed: a client that stops mid-body holds nothing for long.
    body_timeout_s: float = 30.0
    # E5_API_IDLE_TIMEOUT_S: a connection that has not sent a whole request head this many seconds after it
    # opened, or after its last answer, is closed (uvicorn's keep-alive timeout, and its default).
    idle_timeout_s: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ApiSettings":
        env = os.environ if environ is None else environ
        body, requests = env_number(env, "E5_API_MAX_BODY_BYTES"), env_number(env, "E5_API_MAX_REQUESTS")
        body_timeout = env_number(env, "E5_API_BODY_TIMEOUT_S", float, minimum=0.1)
        idle_timeout = env_number(env, "E5_API_IDLE_TIMEOUT_S", float, minimum=0.1)
        return cls(
            api_key=api_key(env.get("E5_API_KEY", "")),
            max_body_bytes=cls.max_body_bytes if body is None else body,
            max_requests=cls.max_requests if requests is None else requests,
            body_timeout_s=cls.body_timeout_s if body_timeout is None else body_timeout,
            idle_timeout_s=cls.idle_timeout_s if idle_timeout is None else idle_timeout,
        )


def api_key(raw: str) -> str | None:
    """E5_API_KEY as a bearer token, or None when blank.

    The token travels in an HTTP header, which carries ASCII: a key with any other character could never be
    sent, and comparing against it would fail every call. So it stops start-up instead (without echoing it).
    """
    key = raw.strip()
    for position, char in enumerate(key):
        if not "!" <= char <= "~":
            raise ValueError(f"E5_API_KEY must be printable ASCII without spaces (it is sent in an HTTP header); "
                             f"character {position + 1} of {len(key)} is not")
    return key or None
