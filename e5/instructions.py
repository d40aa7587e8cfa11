"""How queries and documents are written for the model the checkpoint holds (e5/profiles.py has each recipe).

multilingual-e5-large-instruct's model card: a query is `Instruct: {task}\\nQuery: {text}`, a document is the raw text. The official
evaluation (microsoft/unilm, e5/utils.py) used one instruction per task; the presets below carry those
instructions under short names. For symmetric tasks (STS, bitext mining, duplicates, clustering,
classification) the evaluation put the instruction on *every* text: embed both sides as queries.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from .errors import InputError
from .profiles import LARGE_INSTRUCT, ModelProfile

INPUT_TYPES = ("query", "document")


@dataclass(frozen=True)
class Preset:
    instruction: str
    symmetric: bool  # True: embed both sides as `query` with this instruction


PRESETS: dict[str, Preset] = {
    "web_search": Preset("Given a web search query, retrieve relevant passages that answer the query", False),
    "nq": Preset("Given a question, retrieve Wikipedia passages that answer the question", False),
    "fever": Preset("Given a claim, retrieve documents that support or refute the claim", False),
    "climate_fever": Preset(
        "Given a claim about climate change, retrieve documents that support or refute the claim", False
    ),
    "fiqa": Preset("Given a financial question, retrieve user replies that best answer the question", False),
    "scifact": Preset("Given a scientific claim, retrieve documents that support or refute the claim", False),
    "arguana": Preset("Given a claim, find documents that refute the claim", False),
    "hotpotqa": Preset("Given a multi-hop question, retrieve documents that can help answer the question", False),
    "dbpedia": Preset("Given a query, retrieve relevant entity descriptions from DBPedia", False),
    "nfcorpus": Preset("Given a question, retrieve relevant documents that best answer the question", False),
    "trec_covid": Preset("Given a query on COVID-19, retrieve documents that answer the query", False),
    "touche": Preset("Given a question, retrieve detailed and persuasive arguments that answer the question", False),
    "sts": Preset("Retrieve semantically similar text.", True),
    "bitext": Preset("Retrieve parallel sentences.", True),
    "summarization": Preset("Given a news summary, retrieve other semantically similar summaries", True),
    "quora": Preset("Given a question, retrieve questions that are semantically equivalent to the given question", True),
    "stackoverflow_dup": Preset("Retrieve duplicate questions from StackOverflow forum", True),
    "banking77": Preset("Given a online banking query, find the corresponding intents", True),
    "emotion": Preset(
        "Classify the emotion expressed in the given Twitter message into one of the six emotions: "
        "anger, fear, joy, love, sadness, and surprise",
        True,
    ),
    "twentynewsgroups": Preset("Identify the topic or theme of the given news articles", True),
}

DEFAULT_TASK = PRESETS["web_search"].instruction


def resolve_task(task: str) -> str:
    """A preset name becomes its instruction; anything else is a custom instruction, kept as written."""
    preset = PRESETS.get(task.strip())
    return preset.instruction if preset else task


def near_miss(task: str) -> str | None:
    """The preset a task was probably meant to name, or None.

    A task is an instruction (a sentence) or a preset's name. One word that is not a preset but reads like one
    (`websearch`, `WEB_SEARCH`, `web-serach`) would otherwise be sent to the model as the instruction itself,
    silently. Anything with a space in it, and any word far from every preset name, is an instruction.
    """
    word = task.strip()
    if word in PRESETS or any(c.isspace() for c in word):
        return None
    folded = word.lower().replace("-", "_")
    if folded in PRESETS:
        return folded
    squashed = {name.replace("_", ""): name for name in PRESETS}
    if folded.replace("_", "") in squashed:
        return squashed[folded.replace("_", "")]
    close = difflib.get_close_matches(folded, PRESETS, n=1, cutoff=0.8)
    return close[0] if close else None


def format_query(task: str, text: str) -> str:
    """multilingual-e5-large-instruct's query (the model card's `get_detailed_instruct`)."""
    return LARGE_INSTRUCT.format_query(task, text)


def check_task(task: str, input_type: str, model: ModelProfile) -> None:
    """Refuse a task the model cannot use, rather than drop it silently.

    multilingual-e5-small was trained without instructions: a query is `query: {text}` whatever the task. The
    default task passes (Cog sends it with every request that leaves `task` out, and the OpenAI face fills it
    in), so only a task the caller chose is refused; documents never carry a task, on any model.
    """
    if model.uses_task or input_type != "query" or resolve_task(task) == DEFAULT_TASK:
        return
    raise InputError(
        f"`task` does not apply to {model.short_name}: that model was trained without task instructions (a query is "
        f"embedded as {model.query_template.format(task='', text='{text}')!r}), so a task would change nothing; "
        "leave `task` out",
        "task_not_supported",
    )


def format_texts(texts: list[str], input_type: str, task: str, model: ModelProfile = LARGE_INSTRUCT) -> list[str]:
    """The strings the tokenizer sees, by the model's recipe: for multilingual-e5-large-instruct, queries carry
    the instruction and documents go in raw; for multilingual-e5-small, `query: ` and `passage: ` prefixes."""
    check_task(task, input_type, model)
    if input_type == "document":
        return [model.format_document(text) for text in texts]
    instruction = resolve_task(task)
    return [model.format_query(instruction, text) for text in texts]
