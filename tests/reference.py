"""The model cards' code, kept independent of the engine: the yardstick every equivalence test uses.

From https://huggingface.co/intfloat/multilingual-e5-large-instruct (Transformers usage), with the model
run in float32 and eager attention, and an optional batch size (the card embeds everything in one batch).
https://huggingface.co/intfloat/multilingual-e5-small's Transformers usage is the same code (average pool,
then normalize) with its own inputs: `query: ` and `passage: ` written in front of each text, no instruction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import AutoModel, AutoTokenizer


def average_pool(last_hidden_states: Tensor, attention_mask: Tensor) -> Tensor:
    last_hidden = last_hidden_states.masked_fill(~attention_mask[..., None].bool(), 0.0)
    return last_hidden.sum(dim=1) / attention_mask.sum(dim=1)[..., None]


def get_detailed_instruct(task_description: str, query: str) -> str:
    return f"Instruct: {task_description}\nQuery: {query}"


def small_query(text: str) -> str:
    """multilingual-e5-small's card: 'Each input text should start with "query: " or "passage: "'."""
    return f"query: {text}"


def small_passage(text: str) -> str:
    return f"passage: {text}"


class ModelCard:
    def __init__(self, weights_dir):
        self.tokenizer = AutoTokenizer.from_pretrained(weights_dir)
        self.model = AutoModel.from_pretrained(weights_dir, dtype=torch.float32, attn_implementation="eager").eval()

    @torch.no_grad()
    def embed(self, input_texts: list[str], normalize: bool = True, batch_size: int | None = None) -> Tensor:
        batch_size = batch_size or len(input_texts)
        out = []
        for start in range(0, len(input_texts), batch_size):
            batch_dict = self.tokenizer(
                input_texts[start : start + batch_size], max_length=512, padding=True, truncation=True, return_tensors="pt"
            )
            outputs = self.model(**batch_dict)
            embeddings = average_pool(outputs.last_hidden_state, batch_dict["attention_mask"])
            out.append(F.normalize(embeddings, p=2, dim=1) if normalize else embeddings)
        return torch.cat(out)
