"""multilingual-e5-large-instruct embeddings: the engine behind the Cog predictor (no Cog imports here).

Read in the order a request flows: validation.py -> instructions.py -> engine.py (tokenize, plan, forward)
-> batcher.py (requests share forwards) -> encodings.py / ranking.py; service.py strings them together.
"""

from .engine import Embedder, Encoded
from .errors import E5Error, EngineError, InputError, WeightsError
from .instructions import DEFAULT_TASK, PRESETS, format_query, format_texts, resolve_task
from .model import MODEL_ID, average_pool, l2_normalize

__all__ = [
    "DEFAULT_TASK",
    "E5Error",
    "Embedder",
    "Encoded",
    "EngineError",
    "InputError",
    "MODEL_ID",
    "PRESETS",
    "WeightsError",
    "average_pool",
    "format_query",
    "format_texts",
    "l2_normalize",
    "resolve_task",
]
